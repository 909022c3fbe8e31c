"""Forward + backward time of the adapter's deformable 3x3 conv per implementation and dtype.

Implementations: ``torchvision`` (``torchvision.ops.deform_conv2d`` through ``DeformableConv3x3``'s
torchvision path: the input's dtype where the kernel has it, else float32 and cast back), ``sampled``
(``sampled_deform_conv3x3``: channels-last bilinear gathers with ``F.embedding_bag`` + matmul, the CPU path) and ``plain`` (``nn.Conv2d`` 3x3, the
released-code variant, for scale). Offsets are random (std 0.5 px), so the sampling is really deformable.
Shapes ``B,C,h,w``: the dense ViT-Split-S conv at batch 8 (``8,384,37,37``) and the LLaVA-7B fusion conv
(``8,4096,24,24``).

    .venv/bin/python bench/deform_conv.py --shapes 2,384,37,37 --dtypes fp32 bf16 --iters 3
    python bench/deform_conv.py --device cuda --dtypes fp32 bf16 fp16 --iters 20
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench_common import machine_line, timed, torch_dtype, write_json

IMPLEMENTATIONS = ("torchvision", "sampled", "plain")


def time_one(
    impl: str, shape: tuple[int, ...], dtype_name: str, device: str, warmup: int, iters: int
) -> dict:
    import torch
    from torch import nn

    from llava_vitsplit.adapter.conv import (
        DeformableConv3x3,
        sampled_deform_conv3x3,
        torchvision_compute_dtype,
    )

    torch.manual_seed(0)
    b, c, h, w = shape
    dtype = torch_dtype(dtype_name)
    x = torch.randn(b, c, h, w, device=device, dtype=dtype, requires_grad=True)
    offset = (torch.randn(b, 18, h, w, device=device) * 0.5).to(dtype).requires_grad_()
    dcn = DeformableConv3x3(c, c).to(device=device, dtype=dtype)
    plain = nn.Conv2d(c, c, 3, padding=1).to(device=device, dtype=dtype)
    forward = {
        "torchvision": lambda: dcn.torchvision_forward(x, offset),
        "sampled": lambda: sampled_deform_conv3x3(x, offset, dcn.weight),
        "plain": lambda: plain(x),
    }[impl]

    def step() -> None:
        forward().float().square().mean().backward()

    cuda = device.startswith("cuda")
    for _ in range(warmup):
        step()
    times = [timed(step, cuda) for _ in range(iters)]
    compute = torchvision_compute_dtype(x.device.type, dtype) if impl == "torchvision" else dtype
    return {
        "impl": impl,
        "shape": list(shape),
        "dtype": dtype_name,
        "compute_dtype": str(compute).removeprefix("torch."),
        "median_s": statistics.median(times),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| shape B,C,h,w | dtype | implementation | runs in | fwd+bwd median (ms) |",
        "|---|---|---|---|---:|",
    ]
    for r in rows:
        shape = ",".join(map(str, r["shape"]))
        lines.append(
            f"| {shape} | {r['dtype']} | {r['impl']} | {r['compute_dtype']} | {r['median_s'] * 1e3:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--shapes", nargs="+", default=["8,384,37,37", "8,4096,24,24"])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    for shape in args.shapes:
        dims = tuple(int(v) for v in shape.split(","))
        for dtype in args.dtypes:
            for impl in args.implementations:
                rows.append(time_one(impl, dims, dtype, args.device, args.warmup, args.iters))
                print(json.dumps(rows[-1]))
    print(f"\nmachine: {machine_line(args.device, args.threads)}")
    print(table(rows))
    if args.json:
        write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()

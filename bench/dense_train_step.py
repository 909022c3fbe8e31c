"""Train-step time and peak memory: ViT-Split-S vs full fine-tuning of DINOv2-S + linear head.

ADE20K-512 configuration (512x512 crops, 150 classes, AdamW); random weights (speed does not depend on
them). Variants: ``vitsplit`` (the ``dense-ade20k-s`` preset, deformable 3x3 convs as in the paper),
``vitsplit_plainconv`` (the same with plain 3x3 convs) and ``full_finetune_linear`` (every DINOv2-S weight
trains, BatchNorm + 1x1 head).

Each variant lives in its own child process (so peak memory is its own: peak RSS on CPU and its growth
over the RSS after the model was built; on CUDA ``torch.cuda.max_memory_allocated``), and the parent
interleaves their steps (``bench_common.run_interleaved``), so load from other jobs on a shared machine
falls on all of them alike. Reported: the median step time and
its ratio to the full fine-tune. FLOPs of one step (matmuls, convolutions, attention; forward + backward)
are counted with ``torch.utils.flop_counter`` during the first warm-up step: a load-independent measure of
the work. ``--dtype auto`` runs under bf16 autocast where the hardware has native bf16 (see
``bench_common``), fp32 otherwise; the dtype that ran is printed. ``--profile N`` prints torch.profiler's
per-operator table (top N by self CPU time) of one extra step per variant.

    .venv/bin/python bench/dense_train_step.py --batch-size 2 --warmup 1 --iters 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench_common import (
    MALLOC_TUNABLES,
    StepBench,
    machine_line,
    resolve_dtype,
    run_interleaved,
    torch_dtype,
    write_json,
)

VARIANTS = ("vitsplit", "vitsplit_plainconv", "full_finetune_linear")


def _register_flop_formulas() -> None:
    """FLOP formulas torch's counter lacks: torchvision's deformable conv (CPU attention: ``bench_common``)."""
    import torch
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)
    from torch.utils.flop_counter import register_flop_formula

    ops = torch.ops.torchvision

    @register_flop_formula(ops.deform_conv2d)
    def _forward(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
        c_out, c_in, kh, kw = weight_shape
        return 2 * out_shape[0] * c_out * out_shape[2] * out_shape[3] * c_in * kh * kw

    @register_flop_formula(ops._deform_conv2d_backward)
    def _backward(grad_shape, input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
        c_out, c_in, kh, kw = weight_shape
        return 4 * grad_shape[0] * c_out * grad_shape[2] * grad_shape[3] * c_in * kh * kw


def build_step(
    variant: str, batch_size: int, size: int, device: str, dtype: str, preset_name: str, loss: str = "banded"
):
    """One variant's model, optimiser and training step; returns ``(step, trainable_params)``.

    ``loss``: ``banded`` scores the head's map resized band by band (``segmentation_loss`` of an
    ``UnresizedPrediction``); ``full`` resizes it to ``[B, K, H, W]`` first (the earlier loss path).
    """
    import torch

    from llava_vitsplit.dense.baseline import LinearSegmenter
    from llava_vitsplit.dense.build import build_backbone, build_dense_model
    from llava_vitsplit.dense.losses import segmentation_loss
    from llava_vitsplit.dense.optim import build_optimizer
    from llava_vitsplit.dense.presets import get_dense_preset
    from llava_vitsplit.testing.dense_synthetic import tiny_preset

    torch.manual_seed(0)
    preset = tiny_preset() if preset_name == "tiny" else get_dense_preset(preset_name)
    if variant == "vitsplit_plainconv":
        preset = preset.replace(adapter={**preset.adapter, "conv_type": "plain"})
    backbone = build_backbone(preset.backbone)
    if variant.startswith("vitsplit"):
        model = build_dense_model([preset], backbone)
        forward = lambda x, resize: model(x, resize=resize)[preset.name]  # noqa: E731
    else:
        model = LinearSegmenter(backbone, preset.num_classes)
        forward = model
    model.to(device).train()
    optimizer = build_optimizer(model, preset)
    images = torch.randn(batch_size, 3, size, size, device=device)
    labels = torch.randint(0, preset.num_classes, (batch_size, size, size), device=device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch_dtype(dtype), enabled=dtype != "fp32")

    def step() -> None:
        with autocast:
            value = segmentation_loss(forward(images, resize=loss == "full"), labels)
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_bench(variant: str, settings: dict) -> StepBench:
    """``bench_common.serve`` entry point: this variant's ``StepBench``."""
    _register_flop_formulas()
    keys = ("batch_size", "size", "device", "dtype", "preset", "loss")
    step, trainable = build_step(variant, *(settings[k] for k in keys))
    info = {"dtype": settings["dtype"], "loss": settings["loss"], "malloc": settings["malloc"]}
    info["trainable_params"] = trainable
    return StepBench(step, settings["device"], info)


def measure(args: argparse.Namespace) -> dict[str, dict]:
    """All requested variants, interleaved, with the settings in ``args``."""
    names = ("batch_size", "size", "device", "threads", "preset", "loss", "malloc")
    settings = {k: getattr(args, k) for k in names}
    settings["dtype"] = resolve_dtype(args.dtype, args.device)
    live = not args.device.startswith("cuda")  # CUDA has torch.cuda.max_memory_allocated (cuda_peak_mib)
    return run_interleaved(build_bench, args.variants, settings, args.warmup, args.iters, args.profile, live)


def _ratio(row: dict, full: dict | None, key: str, inverse: bool = False) -> str:
    if not full:
        return "-"
    return f"{(full[key] / row[key]) if inverse else (row[key] / full[key]):.2f}x"


def _paired_speedup(row: dict, full: dict | None) -> str:
    """Median over rounds of full's step time / this variant's step time in the same round."""
    if not full:
        return "-"
    pairs = [f / v for f, v in zip(full["step_times"], row["step_times"], strict=True)]
    return f"{statistics.median(pairs):.2f}x"


def _live(row: dict) -> str:
    """The live-tensor peak (CPU), or CUDA's max_memory_allocated, in MiB."""
    value = row.get("live_peak_mib", row.get("cuda_peak_mib"))
    return "-" if value is None else f"{value:.0f}"


def table(results: dict[str, dict]) -> str:
    """Markdown table with the time, FLOP and training-memory ratios against the full fine-tune."""
    full = results.get("full_finetune_linear")
    lines = [
        "| variant | dtype | trainable | GFLOP/step | FLOP ratio | median s/step | speed vs full | "
        "per-round speed vs full (median) | peak RSS MiB | train +MiB | train memory vs full | "
        "live peak MiB | live memory vs full |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        ratio = lambda key, inverse=False, r=r: _ratio(r, full, key, inverse)  # noqa: E731
        lines.append(
            f"| {r['variant']} | {r['dtype']} | {r['trainable_params'] / 1e6:.1f}M | {r['gflops_per_step']:.0f} | "
            f"{ratio('gflops_per_step', True)} | {r['median_s']:.2f} | {ratio('median_s', True)} | "
            f"{_paired_speedup(r, full)} | "
            f"{r['peak_rss_mib']:.0f} | {r['train_rss_increase_mib']:.0f} | {ratio('train_rss_increase_mib')} | "
            f"{_live(r)} | {ratio('live_peak_mib') if 'live_peak_mib' in r else '-'} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=2, help="paper: 16 (8 per GPU x 2); CPU: 2")
    p.add_argument(
        "--warmup", type=int, default=1, help="untimed steps per variant (>= 1: the first counts FLOPs)"
    )
    p.add_argument("--iters", type=int, default=5, help="interleaved timed rounds")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["auto", "fp32", "bf16"])
    p.add_argument(
        "--preset",
        default="dense-ade20k-s",
        help="dense preset of the ViT-Split variants ('tiny': the tiny test preset)",
    )
    p.add_argument(
        "--loss",
        default="banded",
        choices=["banded", "full"],
        help="banded: resize + cross-entropy band by band (default); full: on the [B, K, H, W] logits",
    )
    p.add_argument(
        "--malloc",
        default="keep",
        choices=sorted(MALLOC_TUNABLES),
        help="keep: glibc keeps freed memory (as the CUDA caching allocator does; default); system: glibc defaults",
    )
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument(
        "--threads", type=int, help="torch intra-op threads in each child (default: torch's choice)"
    )
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print the top-N operator table")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.iters < 1:
        p.error("--warmup and --iters must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    results = measure(args)
    dtype = next(iter(results.values()))["dtype"]
    for r in results.values():
        print(r.pop("profile", ""))
        print(json.dumps(r))
    print(
        f"\nmachine: {machine_line(args.device, args.threads)}; device {args.device}, {dtype}; batch "
        f"{args.batch_size} x {args.size}x{args.size}; {args.loss} loss; malloc {args.malloc}; {args.iters} interleaved timed rounds after {args.warmup} warm-up"
    )
    print(table(results))
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()

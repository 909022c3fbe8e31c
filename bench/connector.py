"""Forward+backward time and peak memory of the connectors at LLaVA-1.5-7B sizes.

Compares, from the presets (CLIP-L/336 tower width 1024, 576 patch tokens, Vicuna-7B width 4096):
``llava-v1.5-7b`` (ViT-Split, deformable convs), ``llava-v1.5-7b-released`` (ViT-Split, plain convs),
``llava-v1.5-7b-vision-mlp`` (ViT-Split at the vision width + MLP) and ``llava-v1.5-7b-mlp`` (LLaVA's
projector). Only the connector is timed: its inputs are random frozen hidden states of the right shape.
Each preset runs in its own subprocess so that peak memory (CUDA: max allocated; CPU: peak RSS growth
over the set-up) is not polluted by the others.

    python bench/connector.py --device cpu --batch-size 8 --iters 2 --warmup 0
    python bench/connector.py --device cuda --dtype bf16 --batch-size 8 --iters 20
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

PRESETS = ["llava-v1.5-7b", "llava-v1.5-7b-released", "llava-v1.5-7b-vision-mlp", "llava-v1.5-7b-mlp"]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(
    preset_name: str,
    device: str,
    dtype_name: str,
    batch: int,
    iters: int,
    warmup: int,
    threads: int,
    tiny: bool = False,
) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer
    from vlm_step import model_config

    from llava_vitsplit.backbones.hf_layers import effective_depth
    from llava_vitsplit.model.connector_registry import build_connector

    torch.manual_seed(0)
    dtype = getattr(torch, DTYPES[dtype_name])
    config = model_config(preset_name, llm_layers=1, tiny=tiny)
    vision = config.vision_config
    depth = effective_depth(vision.num_hidden_layers, config.vision_feature_layer)
    k_t = config.adapter_config.num_task_layers if config.connector_type == "vitsplit" else 1
    blocks = [CLIPEncoderLayer(vision) for _ in range(k_t)]
    connector = build_connector(config, blocks, depth).to(device=device, dtype=dtype).train()
    grid = (vision.image_size // vision.patch_size,) * 2
    tokens = 1 + grid[0] * grid[1]
    states = [torch.randn(batch, tokens, vision.hidden_size, device=device, dtype=dtype) for _ in range(2)]
    hidden_states = [states[i % 2] for i in range(depth + 1)]  # only h[E-K_t..E] are read; share memory
    n_params = sum(p.numel() for p in connector.parameters())

    def step() -> None:
        out = connector.forward_hidden_states(hidden_states, grid)  # [B, 576, 4096]
        out.float().square().mean().backward()
        connector.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rss_before = _rss_mib()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        peak_kind = "CUDA max allocated above inputs+weights"
    else:
        peak = _rss_mib() - rss_before
        peak_kind = "peak RSS growth during the steps"
    times.sort()
    return {
        "preset": preset_name,
        "dtype": dtype_name,
        "connector_params": n_params,
        "median_s": times[len(times) // 2],
        "min_s": times[0],
        "peak_mib": round(peak, 1),
        "peak_kind": peak_kind,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--presets", nargs="*", default=PRESETS)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test tower/LLM widths (a quick check)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        result = run_one(
            args.one,
            args.device,
            args.dtype,
            args.batch_size,
            args.iters,
            args.warmup,
            args.threads,
            args.tiny,
        )
        print(json.dumps(result))
        return 0
    results = []
    for name in args.presets:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--batch-size",
            str(args.batch_size),
            "--iters",
            str(args.iters),
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
        ] + (["--tiny"] if args.tiny else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"done {name}", file=sys.stderr)
    from bench_common import machine_line, write_json

    print(
        f"machine: {machine_line(args.device, args.threads)}; batch {args.batch_size}, dtype {args.dtype}, "
        f"{args.iters} timed steps after {args.warmup} warm-up"
    )
    print(table(results))
    if args.json:
        write_json(args.json, results)
    return 0


def table(results: list[dict]) -> str:
    """Markdown table of the connectors, with each one's time as a multiple of the MLP projector's."""
    mlp = next((r for r in results if r["preset"].endswith("-mlp")), None)
    lines = [
        "| connector (preset) | dtype | parameters | fwd+bwd median (s) | fwd+bwd min (s) | vs MLP | peak memory (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        vs_mlp = f"{r['median_s'] / mlp['median_s']:.1f}x" if mlp else "-"
        lines.append(
            f"| {r['preset']} | {r['dtype']} | {r['connector_params']:,} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
            f"{vs_mlp} | {r['peak_mib']:,.0f} |"
        )
    return "\n".join(lines + [f"peak memory: {results[0]['peak_kind']}"])


if __name__ == "__main__":
    sys.exit(main())

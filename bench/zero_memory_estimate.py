"""DeepSpeed's own model-state memory estimates (ZeRO-2 and ZeRO-3) for LLaVA-ViT-Split 7B and 13B.

Parameter counts come from the presets' real configs, built on the meta device (nothing is allocated).
The trainable set is stage 2's (connector + LLM + LM head); the frozen CLIP-L tower is listed apart,
since DeepSpeed's estimate assumes every parameter trains (frozen bf16 weights add 2 bytes each per GPU
under ZeRO-2, 2 bytes / world size under ZeRO-3). Calls DeepSpeed's
``estimate_zero2_model_states_mem_needs_all_cold`` and ``estimate_zero3_model_states_mem_needs_all_cold``
(their printed tables are kept verbatim) and tabulates the per-GPU figure without offload against
A100-40G and A100-80G. Model states only: activations come on top.

    .venv/bin/python bench/zero_memory_estimate.py --gpus 8 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

from bench_common import write_json

PRESETS = ("llava-v1.5-7b", "llava-v1.5-13b")
GPU_MEMORY_GIB = {"A100-40G": 40, "A100-80G": 80}


def parameter_counts(preset_name: str) -> dict[str, int]:
    """Total, trainable (stage 2), frozen-tower and largest-layer parameter counts, on the meta device."""
    import torch

    from llava_vitsplit.model.modeling import LlavaViTSplitForConditionalGeneration
    from llava_vitsplit.presets import get_preset
    from llava_vitsplit.stages import apply_stage

    with torch.device("meta"):
        model = LlavaViTSplitForConditionalGeneration(get_preset(preset_name).model_config())
    apply_stage(model, "finetune")
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "frozen_tower": sum(p.numel() for p in model.model.vision_tower.parameters()),
        "largest_layer": largest,
    }


def estimates(counts: dict[str, int], gpus: int) -> dict[str, object]:
    """DeepSpeed's printed tables and its no-offload per-GPU bytes for ZeRO-2 and ZeRO-3."""
    from deepspeed.runtime.zero.stage3 import (
        estimate_zero3_model_states_mem_needs,
        estimate_zero3_model_states_mem_needs_all_cold,
    )
    from deepspeed.runtime.zero.stage_1_and_2 import (
        estimate_zero2_model_states_mem_needs,
        estimate_zero2_model_states_mem_needs_all_cold,
    )

    trainable, largest = counts["trainable"], counts["largest_layer"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        estimate_zero2_model_states_mem_needs_all_cold(trainable, num_gpus_per_node=gpus)
        estimate_zero3_model_states_mem_needs_all_cold(trainable, largest, num_gpus_per_node=gpus)
    _, zero2_gpu = estimate_zero2_model_states_mem_needs(trainable, gpus, 1, cpu_offload=False)
    _, zero3_gpu, _ = estimate_zero3_model_states_mem_needs(
        trainable, largest, gpus, 1, cpu_offload=False, cpu_offload_params=False
    )
    return {
        "zero2_gpu_bytes": zero2_gpu,
        "zero3_gpu_bytes": zero3_gpu,
        "deepspeed_output": printed.getvalue(),
    }


def table(rows: dict[str, dict], gpus: int) -> str:
    lines = [
        f"| model | trainable params | frozen tower | ZeRO | model states per GPU ({gpus} GPUs, no offload) | "
        + " | ".join(f"room left on {name}" for name in GPU_MEMORY_GIB)
        + " |",
        "|---|---:|---:|---|---:|" + "---:|" * len(GPU_MEMORY_GIB),
    ]
    for name, row in rows.items():
        for stage in ("zero2", "zero3"):
            gib = row[f"{stage}_gpu_bytes"] / 2**30
            left = " | ".join(f"{total - gib:.1f} GiB" for total in GPU_MEMORY_GIB.values())
            lines.append(
                f"| {name} | {row['trainable'] / 1e9:.2f}B | {row['frozen_tower'] / 1e6:.0f}M | "
                f"{stage[-1]} | {gib:.1f} GiB | {left} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, default=8, help="GPUs per node (one node)")
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = {}
    for name in args.presets:
        counts = parameter_counts(name)
        rows[name] = counts | estimates(counts, args.gpus)
        print(f"## {name}: {json.dumps(counts)}\n{rows[name]['deepspeed_output']}")
    print(table(rows, args.gpus))
    if args.json:
        write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()

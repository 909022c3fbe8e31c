"""One LLaVA training step at real width with reduced LLM depth: step time, tokens/s, MFU, peak memory.

Builds ``LlavaViTSplitForConditionalGeneration`` from a VLM preset's embedded configs (the real CLIP-L/336
tower and Vicuna width 4096; random weights, speed does not depend on them) with only ``--llm-layers``
decoder layers, freezes it as the stage prescribes (``llava_vitsplit.stages``), and times a full training
step (frozen tower, connector, LLM forward + backward, AdamW) on one image + ``--text-tokens`` supervised
caption tokens per sample (``--long-text-tokens N``: a quarter of the samples get N, short and long mixed). The
model is cast to the compute dtype (``--dtype auto``: bf16 where native). ``--layouts padded packed`` times
each preset's step on the trainer's padded rows and on ``--packing``'s packed rows (``PackingCollator``,
rows of ``--max-length``) side by side: the same samples, so tokens/s (real tokens, padding not counted)
compare directly; MFU counts the FLOPs each layout executes (the padded one's include its padding).

Per preset it also times the connector's own forward + backward on the same hidden states, and reports its
share of the step. Presets run side by side in child processes, their steps interleaved
(``bench_common.run_interleaved``). MFU = counted FLOPs / step time / the GPU's dense bf16 peak (GPU only).

    .venv/bin/python bench/vlm_step.py --stage pretrain --llm-layers 2 --batch-size 1 --iters 3 --threads 1
    python bench/vlm_step.py --device cuda --stage finetune --llm-layers 4 --batch-size 8 --iters 10
    python bench/vlm_step.py --device cuda --stage finetune --llm-layers 4 --batch-size 8 --iters 5 \
        --presets llava-v1.5-7b --text-tokens 32 --long-text-tokens 1024 --layouts padded packed
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench_common import (
    StepBench,
    machine_line,
    resolve_dtype,
    run_interleaved,
    timed,
    torch_dtype,
    write_json,
)

PRESETS = ("llava-v1.5-7b", "llava-v1.5-7b-mlp")
# dense bf16 tensor-core peaks (FLOP/s) by device-name substring, for MFU
GPU_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A6000": 155e12}


def gpu_peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    name = torch.cuda.get_device_name()
    return next((peak for key, peak in GPU_BF16_PEAK.items() if key in name), None)


def model_config(preset_name: str, llm_layers: int, tiny: bool):
    """The preset's config with ``llm_layers`` decoder layers; ``tiny`` swaps in the tiny test parts."""
    from llava_vitsplit.presets import get_preset

    preset = get_preset(preset_name)
    config = preset.model_config()
    if tiny:
        from dataclasses import replace

        from llava_vitsplit.testing.tiny import tiny_adapter_settings, tiny_text_config, tiny_vision_config

        adapter = {**tiny_adapter_settings(), "conv_type": (preset.adapter or {}).get("conv_type", "plain")}
        text = tiny_text_config(vocab_size=512).to_dict()
        preset = replace(preset, vision_config=tiny_vision_config().to_dict(), text_config=text)
        preset = replace(preset, adapter=adapter if preset.adapter else None)
        config = preset.model_config()
    config.text_config.num_hidden_layers = llm_layers
    return config


def text_lengths(batch_size: int, text_tokens: int, long_text_tokens: int | None) -> list[int]:
    """Supervised tokens per sample: ``text_tokens``, and with ``long_text_tokens`` a quarter of the
    samples (at least one, seeded choice) that long: short answers mixed with long conversations."""
    lengths = [text_tokens] * batch_size
    if long_text_tokens is not None:
        import random

        for i in random.Random(0).sample(range(batch_size), max(1, batch_size // 4)):
            lengths[i] = long_text_tokens
    return lengths


def make_batch(config, settings: dict, device: str, dtype) -> tuple[dict, int]:
    """One image + supervised text per sample (``text_lengths``), collated as the trainer does: padded
    rows (``SupervisedCollator``) or, for the ``packed`` layout, ``PackingCollator`` rows of at most
    ``max_length`` tokens: ``input_ids``, ``labels`` (+ ``attention_mask`` or ``position_ids``),
    ``pixel_values``; and the number of real (not padding) tokens."""
    import torch

    from llava_vitsplit.data import PackingCollator, SupervisedCollator
    from llava_vitsplit.model.connector_registry import connector_spec

    vision = config.vision_config
    grid = vision.image_size // vision.patch_size
    n_image = connector_spec(config.connector_type).num_image_tokens(config, (grid, grid))
    items = []
    for n_text in text_lengths(settings["batch_size"], settings["text_tokens"], settings["long_text_tokens"]):
        text = torch.randint(3, min(config.text_config.vocab_size - 1, 30000), (n_text,))
        image = torch.full((n_image,), config.image_token_index)
        input_ids = torch.cat([torch.ones(1, dtype=torch.long), image, text])  # [1 + N_img + T]
        labels = torch.cat([torch.full((1 + n_image,), -100), text])
        pixels = torch.randn(1, 3, vision.image_size, vision.image_size, dtype=dtype)
        items.append({"input_ids": input_ids, "labels": labels, "pixel_values": pixels})
    packed = settings.get("layout") == "packed"
    collate = PackingCollator(0, settings["max_length"]) if packed else SupervisedCollator(0)
    real_tokens = sum(len(item["input_ids"]) for item in items)
    return {key: value.to(device) for key, value in collate(items).items()}, real_tokens


def _connector_timer(model, batch, repeats: int = 3):
    """``extra`` callback: median forward + backward time of the connector alone on the step's hidden states."""
    import torch

    def measure() -> dict:
        inner = model.model
        hidden, grid = inner.vision_hidden_states(batch["pixel_values"])
        cuda = batch["pixel_values"].is_cuda
        times = [timed(lambda: _connector_step(inner.connector, hidden, grid), cuda) for _ in range(repeats)]
        model.zero_grad(set_to_none=True)
        return {"connector_s": statistics.median(times)}

    def _connector_step(connector, hidden, grid) -> None:
        with torch.enable_grad():
            connector.forward_hidden_states(hidden, grid).float().square().mean().backward()

    return measure


def build_bench(preset_name: str, settings: dict) -> StepBench:
    """``bench_common.serve`` entry point: this preset's stage step as a ``StepBench``."""
    import torch

    from llava_vitsplit.model.modeling import LlavaViTSplitForConditionalGeneration
    from llava_vitsplit.stages import apply_stage

    torch.manual_seed(0)
    device, dtype = settings["device"], torch_dtype(settings["dtype"])
    preset_name, _, layout = preset_name.partition("+")
    settings = {**settings, "layout": layout or "padded"}
    config = model_config(preset_name, settings["llm_layers"], settings["tiny"])
    model = LlavaViTSplitForConditionalGeneration(config).to(device=device, dtype=dtype).train()
    apply_stage(model, settings["stage"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    model.config.use_cache = False
    batch, real_tokens = make_batch(config, settings, device, dtype)

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    info = {
        "preset": preset_name,
        "layout": settings["layout"],
        "stage": settings["stage"],
        "dtype": settings["dtype"],
        "llm_layers": settings["llm_layers"],
        "tokens_per_step": real_tokens,  # padding not counted
        "rows": len(batch["input_ids"]),
        "pad_fraction": 1 - real_tokens / batch["input_ids"].numel(),
        "trainable_params": sum(p.numel() for p in trainable),
        "connector_params": sum(p.numel() for p in model.connector.parameters()),
    }
    return StepBench(step, device, info, extra=_connector_timer(model, batch))


def summarise(results: dict[str, dict], device: str) -> dict[str, dict]:
    """Add tokens/s, MFU and the connector's share of the step to each preset's results."""
    peak = gpu_peak_flops(device)
    for r in results.values():
        r["tokens_per_s"] = r["tokens_per_step"] / r["median_s"]
        r["connector_share"] = r["connector_s"] / r["median_s"]
        r["mfu"] = (r["gflops_per_step"] * 1e9 / r["median_s"] / peak) if peak else None
    return results


def table(results: dict[str, dict]) -> str:
    """One row per preset and layout; ``step vs MLP`` compares with the MLP preset of the same layout."""
    mlp = {r["layout"]: r for r in results.values() if r["preset"].endswith("-mlp")}
    lines = [
        "| preset | layout | stage | dtype | LLM layers | rows | pad fraction | tokens/step | step s | tokens/s | "
        "MFU | connector s | connector share | step vs MLP | peak memory MiB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        base = mlp.get(r["layout"])
        vs_mlp = f"{r['median_s'] / base['median_s']:.2f}x" if base else "-"
        memory = r.get("cuda_peak_mib", r["peak_rss_mib"])
        lines.append(
            f"| {r['preset']} | {r['layout']} | {r['stage']} | {r['dtype']} | {r['llm_layers']} | {r['rows']} | "
            f"{r['pad_fraction']:.2f} | {r['tokens_per_step']} | {r['median_s']:.3f} | {r['tokens_per_s']:.0f} | "
            f"{mfu} | {r['connector_s']:.3f} | {r['connector_share']:.0%} | {vs_mlp} | {memory:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    p.add_argument("--stage", default="pretrain", choices=["pretrain", "finetune"])
    p.add_argument("--llm-layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--text-tokens", type=int, default=32, help="supervised tokens after the image")
    p.add_argument(
        "--long-text-tokens",
        type=int,
        help="draw each sample's text length between --text-tokens and this (short and long mixed)",
    )
    p.add_argument(
        "--layouts",
        nargs="+",
        default=["padded"],
        choices=["padded", "packed"],
        help="padded rows and/or --packing's packed rows, side by side",
    )
    p.add_argument("--max-length", type=int, default=2048, help="row capacity of the packed layout")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch intra-op threads in each child")
    p.add_argument("--tiny", action="store_true", help="tiny CLIP + Llama parts instead of the real widths")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, dict]:
    keys = ("stage", "llm_layers", "batch_size", "text_tokens", "long_text_tokens", "max_length", "device",
            "threads", "tiny")  # fmt: skip
    settings = {k: getattr(args, k) for k in keys} | {"dtype": resolve_dtype(args.dtype, args.device)}
    variants = [p if layout == "padded" else f"{p}+{layout}" for p in args.presets for layout in args.layouts]
    results = run_interleaved(build_bench, variants, settings, args.warmup, args.iters)
    return summarise(results, args.device)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    results = measure(args)
    for r in results.values():
        print(json.dumps(r))
    print(f"\nmachine: {machine_line(args.device, args.threads)}; batch {args.batch_size}")
    print(table(results))
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()

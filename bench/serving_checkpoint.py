"""The serving sections' inputs for ``bench/gpu_suite.sh``: a random-weight checkpoint and a few images.

``--preset llava-v1.5-7b`` builds ``LlavaViTSplitForConditionalGeneration`` from the preset's embedded
configs (CLIP ViT-L/14-336 + Vicuna-7B width 4096 and all 32 decoder layers unless ``--llm-layers``;
random weights: serving speed does not depend on them) directly on ``--device`` in ``--dtype`` and saves it
as a loadable checkpoint (safetensors + processor). No tokenizer can be downloaded, so the processor holds
the offline byte-level BPE test tokenizer with the preset's LLM family chat template, and the LM's
vocabulary is that tokenizer's (~400 ids instead of 32000: the LM head is ~2% of the per-token FLOPs; every
sampled id then decodes, so both engines stream text). ``--tiny`` saves the tiny test checkpoint (the vLLM
tests' LM width 64) instead. Also writes ``--images`` distinct images and a question file naming them.

    python bench/serving_checkpoint.py --preset llava-v1.5-7b --device cuda --dtype bf16 --out OUT --json R
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from bench_common import torch_dtype, write_json


def build_random_checkpoint(out: Path, preset_name: str, device: str, dtype: str, llm_layers: int | None):
    """Save the preset's model with random weights at real width to ``out``; returns its parameter count."""
    import torch
    from transformers import CLIPImageProcessor

    from llava_vitsplit.llms.registry import prepare_tokenizer, resolve_family, stop_token_ids
    from llava_vitsplit.model.builder import ensure_image_token, make_processor
    from llava_vitsplit.model.modeling import LlavaViTSplitForConditionalGeneration
    from llava_vitsplit.presets import get_preset
    from llava_vitsplit.testing.tiny import make_bpe_tokenizer

    preset = get_preset(preset_name)
    tokenizer = make_bpe_tokenizer()
    family = resolve_family(preset.text_config["model_type"], tokenizer)
    prepare_tokenizer(family, tokenizer)
    image_token_id = ensure_image_token(tokenizer)
    text = {**preset.text_config, "vocab_size": len(tokenizer)}
    if llm_layers:
        text["num_hidden_layers"] = llm_layers
    text.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    config = replace(preset, text_config=text).model_config(image_token_index=image_token_id)
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype(dtype))
    try:
        with torch.device(device):
            model = LlavaViTSplitForConditionalGeneration(config)  # random init on the device
    finally:
        torch.set_default_dtype(default_dtype)
    size = preset.vision_config["image_size"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    processor = make_processor(config, image_processor, tokenizer, preset.image_aspect_ratio, family)
    model.generation_config.eos_token_id = stop_token_ids(family, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    grid = size // preset.vision_config["patch_size"]
    model.config.image_seq_length = grid * grid
    partial = out.with_name(out.name + ".partial")  # renamed when complete: no half-written checkpoint
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    partial.rename(out)
    return sum(p.numel() for p in model.parameters())


def build_tiny(out: Path) -> int:
    from llava_vitsplit.testing.tiny import build_tiny_checkpoint

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _, model, _ = build_tiny_checkpoint(partial, text_width=64, text_heads=2)
    partial.rename(out)
    return sum(p.numel() for p in model.parameters())


def write_images(folder: Path, count: int, size: int) -> Path:
    """``count`` distinct RGB images (colour bands) and ``questions.jsonl`` naming them; returns the file."""
    from PIL import Image

    from llava_vitsplit.util.atomic import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(count):
        image = Image.new("RGB", (size, size), (k * 37 % 256, 90, 200))
        image.paste((200, k * 53 % 256, 40), (0, size // 3, size, 2 * size // 3))
        write_atomic(folder / f"{k:03d}.png", lambda path, image=image: image.save(path, format="PNG"))
        lines.append(json.dumps({"question_id": k, "image": f"{k:03d}.png", "text": "Describe the image."}))
    questions = folder.parent / "questions.jsonl"
    write_atomic(questions, lambda path: path.write_text("\n".join(lines) + "\n"))
    return questions


def table(report: dict) -> str:
    return "\n".join([
        "| checkpoint | preset | LLM layers | parameters (M) | dtype | build + save s | images |",
        "|---|---|---|---|---|---|---|",
        f"| {report['checkpoint']} | {report['preset']} | {report['llm_layers']} | {report['params'] / 1e6:.1f} "
        f"| {report['dtype']} | {report['seconds']:.1f} | {report['images']} |",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="llava-v1.5-7b")
    p.add_argument("--tiny", action="store_true", help="the tiny test checkpoint instead of the preset")
    p.add_argument("--llm-layers", type=int, help="default: the preset's (32 for Vicuna-7B)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bf16", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--images", type=int, default=16)
    p.add_argument(
        "--out", type=Path, required=True, help="folder: OUT/checkpoint, OUT/images, OUT/questions.jsonl"
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    checkpoint = args.out / "checkpoint"
    shutil.rmtree(checkpoint, ignore_errors=True)
    begin = time.perf_counter()
    if args.tiny:
        params = build_tiny(checkpoint)
    else:
        params = build_random_checkpoint(checkpoint, args.preset, args.device, args.dtype, args.llm_layers)
    seconds = time.perf_counter() - begin
    layers = json.loads((checkpoint / "config.json").read_text())["text_config"]["num_hidden_layers"]
    size = 56 if args.tiny else 336
    questions = write_images(args.out / "images", args.images, size)
    report = {"checkpoint": str(checkpoint), "question_file": str(questions), "image_folder": str(args.out / "images"),
              "preset": "tiny" if args.tiny else args.preset, "llm_layers": layers, "params": params,
              "dtype": "fp32" if args.tiny else args.dtype, "seconds": round(seconds, 1), "images": args.images}  # fmt: skip
    if args.json:
        write_json(args.json, report)
    print(table(report))
    return report


if __name__ == "__main__":
    main()

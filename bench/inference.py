"""Inference speed of the ViT-Split connector against LLaVA's MLP projector on the same small VLM.

Both models share the frozen vision tower and the language model (by default the offline assets
DINOv2-S/14 and SmolLM2-135M-Instruct in playground/models; ``llava-vitsplit assets`` builds them) and
differ only in the connector: ViT-Split as released for LLaVA (task head = trainable copy of the last
effective block, one prior layer = h[-2], plain 3x3 convs, fusion straight to the LLM width) versus
``mlp2x_gelu``. For each we time, on one image + question, with greedy decoding forced to
``--max-new-tokens`` tokens:

- vision + connector forward (``get_image_features``),
- time to first token (``generate`` call -> first new token: vision, connector and prefill),
- decode speed (new tokens after the first / time between first and last token).

Medians over ``--repeats`` runs after one warm-up; the two models alternate run by run, so a change in
machine load affects both alike. On a shared CPU use ``--threads 1`` (oversubscribed OpenMP threads
slow decoding by up to 10x). Weights are untrained (speed does not depend on them).
usage: python bench/inference.py [--device cpu] [--dtype fp32] [--max-new-tokens 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from transformers.generation.streamers import BaseStreamer

from llava_vitsplit.model.builder import build_model
from llava_vitsplit.serve.generation import prepare_inputs, render_prompt, user_messages
from llava_vitsplit.serve.loading import LoadedModel, resolve_device, resolve_dtype

QUESTION = "Describe this image in detail."


class TokenTimer(BaseStreamer):
    """Records the time each new token reaches the streamer (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.prompt_seen = False
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def test_image(size: int = 480) -> Image.Image:
    """A deterministic colourful image (gradients and a few shapes), so runs are repeatable."""
    x = torch.linspace(0, 1, size)
    red, green = x[None, :].expand(size, size), x[:, None].expand(size, size)
    blue = ((x[None, :] * 7).sin() * (x[:, None] * 5).cos() + 1) / 2
    pixels = (torch.stack([red, green, blue], dim=-1) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def released_style_adapter(num_layers: int, feature_layer: int = -2) -> dict:
    """The released LLaVA connector's adapter settings for a tower of ``num_layers`` blocks."""
    last_used = num_layers + feature_layer  # 0-based index of the block whose output is h[feature_layer]
    return {
        "num_task_layers": 1,
        "prior_selection": "explicit",
        "prior_layers": [last_used],
        "conv_type": "plain",
        "task_head_keeps_prefix": False,
    }


def connector_params(model) -> int:
    connector = model.connector
    return sum(p.numel() for p in connector.parameters() if p.requires_grad)


def prepare(loaded: LoadedModel, image: Image.Image, max_new_tokens: int) -> tuple[dict, dict]:
    """Model inputs for the benchmark question and greedy settings forced to ``max_new_tokens``."""
    prompt = render_prompt(loaded.processor, user_messages(QUESTION, 1, loaded.processor.image_token))
    inputs = prepare_inputs(loaded, [prompt], [image])
    gen = {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": max_new_tokens,
        "do_sample": False,
        "pad_token_id": loaded.tokenizer.pad_token_id,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    return inputs, gen


@torch.inference_mode()
def time_once(loaded: LoadedModel, inputs: dict, gen: dict) -> dict:
    """One measurement: vision+connector forward, then a full ``generate`` with per-token times."""
    start = time.perf_counter()
    loaded.model.model.get_image_features(pixel_values=inputs["pixel_values"])
    vision_s = time.perf_counter() - start
    timer = TokenTimer()
    start = time.perf_counter()
    loaded.model.generate(**inputs, streamer=timer, **gen)
    if len(timer.times) != gen["max_new_tokens"]:
        raise RuntimeError(f"expected {gen['max_new_tokens']} new tokens, got {len(timer.times)}")
    return {
        "vision_connector_s": vision_s,
        "ttft_s": timer.times[0] - start,
        "decode_tokens_per_s": (len(timer.times) - 1) / (timer.times[-1] - timer.times[0]),
    }


def summarise(runs: list[dict], loaded: LoadedModel, inputs: dict, new_tokens: int) -> dict:
    return {
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "new_tokens": new_tokens,
        "vision_connector_ms": 1000 * statistics.median(r["vision_connector_s"] for r in runs),
        "ttft_ms": 1000 * statistics.median(r["ttft_s"] for r in runs),
        "decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in runs),
        "connector_params": connector_params(loaded.model),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vision", default="playground/models/dinov2-small")
    parser.add_argument("--lm", default="playground/models/smollm2-135m-instruct")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    for path in (args.vision, args.lm):
        if not (Path(path) / "config.json").is_file():
            print(
                f"{path}: no model there; build the offline assets with `llava-vitsplit assets`",
                file=sys.stderr,
            )
            return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    image = test_image()
    load_before = os.getloadavg()[0]  # other processes on the machine skew CPU timings
    from transformers import AutoConfig

    num_layers = AutoConfig.from_pretrained(args.vision).num_hidden_layers
    models = {}
    for name, connector, adapter in (
        ("vitsplit", "vitsplit", released_style_adapter(num_layers)),
        ("mlp2x_gelu", "mlp2x_gelu", None),
    ):
        model, processor = build_model(
            args.vision, args.lm, connector_type=connector, adapter=adapter, torch_dtype=dtype, seed=0
        )
        model.to(device).eval()
        loaded = LoadedModel(model=model, processor=processor, device=device, dtype=dtype)
        models[name] = (loaded, *prepare(loaded, image, args.max_new_tokens))
    runs: dict[str, list[dict]] = {name: [] for name in models}
    for repeat in range(args.repeats + 1):  # repeat 0 warms up; models alternate so load drift hits both
        for name, (loaded, inputs, gen) in models.items():
            result = time_once(loaded, inputs, gen)
            if repeat:
                runs[name].append(result)
    results = {
        name: summarise(runs[name], loaded, inputs, args.max_new_tokens)
        for name, (loaded, inputs, _) in models.items()
    }
    report = {
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "load_average_1m_before": load_before,
        "load_average_1m_after": os.getloadavg()[0],
        "cpu": platform.processor() or platform.machine(),
        "vision": args.vision,
        "lm": args.lm,
        "repeats": args.repeats,
        "results": results,
    }
    print(json.dumps(report, indent=2))
    print("\n| connector | connector params | prompt tokens | vision+connector ms | TTFT ms | decode tok/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['connector_params'] / 1e6:.2f}M | {r['prompt_tokens']} | "
            f"{r['vision_connector_ms']:.0f} | {r['ttft_ms']:.0f} | {r['decode_tokens_per_s']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tiny pretrained-looking parts for CI, tests and benchmarks of the training scripts (no downloads).

``save_tiny_parts(dir, data_dir)`` writes ``dir/vision`` (a tiny random CLIP vision tower with its image processor)
and ``dir/llm`` (a tiny random Llama whose tokenizer is a real sentencepiece model trained here, saved the
way Vicuna ships it: ``tokenizer.model`` + ``tokenizer_config.json``, no ``tokenizer.json``), i.e. exactly
what ``--vision_tower`` and ``--model_name_or_path`` point at in a real run.
"""

from __future__ import annotations

import json
from pathlib import Path

from llava_vitsplit.model.chat_templates import VICUNA_V1_SYSTEM
from llava_vitsplit.testing.tiny import (
    TINY_CORPUS,
    save_tiny_language_model,
    save_tiny_vision_tower,
    tiny_adapter_settings,
)
from llava_vitsplit.tokenizers import load_tokenizer, train_llama_sentencepiece


def tiny_adapter_args(fusion_output: str = "vision_mlp") -> list[str]:
    """``llava-vitsplit train`` flags for an adapter that fits the tiny tower (``tiny_adapter_settings``)."""
    settings = {**tiny_adapter_settings(), "fusion_output": fusion_output}
    return [item for key, value in settings.items() for item in (f"--{key}", str(value))]


def tokenizer_corpus(data_files: list[Path] | None = None) -> list[str]:
    """Text the tiny tokenizer is trained on: the built-in corpus, the system prompt and the data's turns."""
    lines = list(TINY_CORPUS) + [VICUNA_V1_SYSTEM, "USER: ASSISTANT:"]
    for path in data_files or []:
        for record in json.loads(Path(path).read_text()):
            lines.extend(turn["value"] for turn in record["conversations"])
    return lines


def save_tiny_parts(
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    vocab_size: int = 512,
    seed: int = 0,
    vision_layers: int = 4,
) -> dict[str, Path]:
    """Write ``vision/`` and ``llm/`` under ``out_dir``; returns their paths (and the tokenizer folder).

    ``data_dir``: a folder of LLaVA ``*.json`` records (the repository's ``tests/data``) whose turns the
    tokenizer is also trained on, so they tokenize into whole words; ``None`` uses the built-in corpus only.
    """
    out_dir = Path(out_dir)
    files = sorted(Path(data_dir).glob("*.json")) if data_dir is not None else []
    spm_dir = train_llama_sentencepiece(
        out_dir / "sentencepiece", tokenizer_corpus(files), vocab_size=vocab_size
    )
    vision = save_tiny_vision_tower(out_dir / "vision", "clip", seed=seed, num_layers=vision_layers)
    llm = out_dir / "llm"
    save_tiny_language_model(llm, load_tokenizer(str(spm_dir)), seed=seed)
    # Ship the LLM folder like Vicuna: the sentencepiece model only, so every load converts it.
    for name in ("tokenizer.json",):
        (llm / name).unlink(missing_ok=True)
    for name in ("tokenizer.model", "tokenizer_config.json"):
        (llm / name).write_bytes((spm_dir / name).read_bytes())
    return {"vision": vision, "llm": llm, "tokenizer": spm_dir}

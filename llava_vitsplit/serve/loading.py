"""Pick a device and dtype and load a checkpoint once (model + processor) for chat, demo and batch runs.

Defaults per device: CUDA -> bfloat16 (float16 where the GPU has no bf16), Apple MPS -> float16,
CPU -> float32 (bf16 matmuls are slow on most CPUs and the deformable conv runs in fp32 anyway).
The tokenizer pads on the left so batched generation continues every row from its last real token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}
DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")


@dataclass
class LoadedModel:
    """A model in eval mode with its processor, and where it lives."""

    model: torch.nn.Module
    processor: object
    device: torch.device
    dtype: torch.dtype

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu; anything else is passed to ``torch.device``."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto``/None -> :func:`default_dtype`; else one of bf16/fp16/fp32 (long names accepted)."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "", "auto"):
        return default_dtype(device)
    key = str(name).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: auto, {', '.join(sorted(DTYPES))}")
    return DTYPES[key]


def check_checkpoint(path: str) -> None:
    """A local-looking path must be a directory with a config.json (hub ids are left to transformers)."""
    local = Path(path).expanduser()
    looks_local = local.exists() or path.startswith((".", "/", "~")) or path.count("/") > 1
    if looks_local and not (local / "config.json").is_file():
        raise FileNotFoundError(
            f"--model {path}: no checkpoint there (expected a directory with config.json)"
        )


def load_model(
    path: str, device: str | None = "auto", dtype: str | torch.dtype | None = "auto"
) -> LoadedModel:
    """Load a llava_vitsplit (or any image-text-to-text) checkpoint + processor for inference."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import llava_vitsplit  # noqa: F401  (registers the llava_vitsplit model type with the Auto classes)

    check_checkpoint(path)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype)
    model.to(torch_device).eval()
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return LoadedModel(model=model, processor=processor, device=torch_device, dtype=torch_dtype)

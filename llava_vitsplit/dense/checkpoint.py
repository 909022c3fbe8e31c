"""Dense checkpoints: atomic writes, discovery of the latest one, and rebuilding a model from one.

A checkpoint is one ``torch.save`` file ``step-<N>.pt`` holding the presets (plain dicts), where the
frozen backbone comes from (its weights folder, or its full state dict when it was randomly
initialised, as in tests), the trainable weights only, and the optimiser / scheduler / RNG state for
resuming. It is written to a temporary file in the same folder and renamed into place, so a crash never
leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "llava_vitsplit.dense/1"
_STEP = re.compile(r"^step-(\d+)\.pt$")


def save_atomic(payload: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to ``path`` through a temporary file + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def checkpoint_steps(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-<N>.pt`` in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name))]
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    steps = checkpoint_steps(folder)
    return steps[-1][1] if steps else None


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for _, path in checkpoint_steps(folder)[:-keep]:
        path.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a dense checkpoint (a folder means its latest ``step-<N>.pt``)."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path) or latest_checkpoint(path / "checkpoints")
        if latest is None:
            raise FileNotFoundError(f"no step-<N>.pt checkpoint in {path} or {path / 'checkpoints'}")
        path = latest
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # Our own file: it holds optimiser and RNG state (numpy arrays), so it is not weights-only.
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a llava-vitsplit dense checkpoint (format {FORMAT})")
    payload["path"] = str(path)
    return payload


def split_state(model: nn.Module, frozen_prefix: str) -> dict[str, torch.Tensor]:
    """The state dict without the frozen backbone's entries (those under ``frozen_prefix``)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(frozen_prefix)}


def frozen_prefix(task: str) -> str:
    """Where the frozen tower sits in the model: ``DenseModel.backbone`` or Mask R-CNN's ``backbone.backbone``."""
    return "backbone.backbone." if task == "detection" else "backbone."


def backbone_source(spec: Any, weights: str | Path | None, backbone: nn.Module) -> dict[str, Any]:
    """How to rebuild the frozen tower: its weights path, or (random init) its full state dict."""
    if weights is not None:
        return {"spec": spec, "weights": str(Path(weights).resolve())}
    return {"spec": spec, "weights": None, "state_dict": backbone.state_dict()}


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor], prefix: str, source: str) -> None:
    """Load ``state`` into everything but the frozen tower; missing or unexpected keys raise."""
    expected = set(split_state(model, prefix))
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {source} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict(state, strict=False)

"""Dense checkpoints: a folder per step, nothing in it unpickles objects, written atomically.

``<run>/checkpoints/step-<N>/`` holds:

- ``checkpoint.json``: format, step, the presets (plain dicts) and where the frozen tower comes from
  with the input normalisation training used (``{"spec": ..., "weights": <folder> | null,
  "normalization": {"mean": [r, g, b], "std": [r, g, b]}}``; checkpoints written before the field was
  recorded were all trained on ImageNet's, which ``recorded_normalization`` returns for them);
- ``model.safetensors``: the trainable weights only (the frozen tower excluded);
- ``backbone.safetensors``: the tower's weights, only when it was randomly initialised (tests);
- ``trainer_state.pt``: optimiser, scheduler, sampler position and log window, tensors and plain
  containers only, read with ``torch.load(weights_only=True)``;
- ``rng-<rank>.pt``: each process's Python / NumPy / torch (and CUDA) RNG state, the same way.

Evaluation and prediction read only the JSON and safetensors files. The folder is filled under a hidden
temporary name and renamed into place, so a crash never leaves a partial checkpoint. Old pickled
``step-<N>.pt`` files are refused with the one command that converts them (``convert_legacy``, which
itself reads them with ``weights_only=True`` and only NumPy's array type allowed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llava_vitsplit.backbones.registry import IMAGENET, Normalization
from llava_vitsplit.util.atomic import publish, write_atomic, write_json

FORMAT = "llava_vitsplit.dense/2"
LEGACY_FORMAT = "llava_vitsplit.dense/1"
META_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
BACKBONE_FILE = "backbone.safetensors"
TRAINER_FILE = "trainer_state.pt"
CONVERT_COMMAND = "llava-vitsplit dense-convert-checkpoint"
_STEP = re.compile(r"^step-(\d+)$")
_LEGACY_STEP = re.compile(r"^step-(\d+)\.pt$")


class LegacyCheckpointError(ValueError):
    """An old pickled ``step-<N>.pt``: never unpickled; the message names the conversion command."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} is an old pickled dense checkpoint (step-<N>.pt); it is not loaded because unpickling "
            f"a file can run code. If you trust it, convert it once with: {CONVERT_COMMAND} {path}"
        )
        self.path = path


def step_folder(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"step-{step:07d}"


def _steps(folder: Path, pattern: re.Pattern, want_dir: bool) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if (m := pattern.match(p.name)) and p.is_dir() == want_dir
    ]
    return sorted(found)


def checkpoint_steps(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-<N>/`` checkpoint in ``folder``, oldest first."""
    return _steps(Path(folder), _STEP, want_dir=True)


def legacy_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the old pickled ``step-<N>.pt`` files in ``folder``."""
    return _steps(Path(folder), _LEGACY_STEP, want_dir=False)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest ``step-<N>/`` in ``folder``; raises ``LegacyCheckpointError`` if an old file is newer."""
    steps, legacy = checkpoint_steps(folder), legacy_checkpoints(folder)
    if legacy and (not steps or legacy[-1][0] > steps[-1][0]):
        raise LegacyCheckpointError(legacy[-1][1])
    return steps[-1][1] if steps else None


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0`` keeps all)."""
    import shutil

    if keep <= 0:
        return
    for _, path in checkpoint_steps(folder)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``step-<N>/`` folder from itself, a ``checkpoints/`` folder or a run folder (their newest)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        raise LegacyCheckpointError(path)
    if path.is_file():
        raise ValueError(f"{path} is a file; a dense checkpoint is a step-<N>/ folder (or its run folder)")
    if path.is_dir() and (path / META_FILE).is_file():
        return path
    if path.is_dir():
        for folder in (path, path / "checkpoints"):
            latest = latest_checkpoint(folder)
            if latest is not None:
                return latest
        raise FileNotFoundError(f"no step-<N>/ checkpoint in {path} or {path / 'checkpoints'}")
    raise FileNotFoundError(f"checkpoint {path} does not exist")


def save_checkpoint(
    staging: Path,
    final: Path,
    meta: dict[str, Any],
    model_state: dict[str, torch.Tensor],
    backbone_state: dict[str, torch.Tensor] | None,
    trainer_state: dict[str, Any],
) -> Path:
    """Fill ``staging`` (which may already hold ``rng-<rank>.pt`` files) and rename it to ``final``."""
    staging.mkdir(parents=True, exist_ok=True)
    save_file(_plain(model_state), str(staging / MODEL_FILE))
    if backbone_state is not None:
        save_file(_plain(backbone_state), str(staging / BACKBONE_FILE))
    torch.save(trainer_state, staging / TRAINER_FILE)
    write_json(staging / META_FILE, {"format": FORMAT, **meta})
    publish(staging, final)
    return final


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies that share no storage (safetensors refuses shared tensors)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``{"presets", "backbone", "model", "step", "path"}`` of a checkpoint (see ``resolve_checkpoint``).

    ``backbone`` is ``{"spec", "weights", "state_dict"}`` with the tower's tensors when it was random.
    Only JSON and safetensors are read.
    """
    folder = resolve_checkpoint(path)
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path} is not valid JSON: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a llava-vitsplit dense checkpoint (format {FORMAT})")
    for name in (MODEL_FILE, *((BACKBONE_FILE,) if meta["backbone"].get("weights") is None else ())):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint {folder} is missing {name}")
    backbone = dict(meta["backbone"])
    backbone["state_dict"] = (
        load_file(str(folder / BACKBONE_FILE)) if backbone.get("weights") is None else None
    )
    return {
        "presets": meta["presets"],
        "backbone": backbone,
        "model": load_file(str(folder / MODEL_FILE)),
        "step": int(meta["step"]),
        "path": str(folder),
    }


def load_trainer_state(folder: str | Path) -> dict[str, Any]:
    """Optimiser / scheduler / data state of a checkpoint folder (``weights_only`` load)."""
    path = Path(folder) / TRAINER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {folder} has no {TRAINER_FILE}: it cannot be resumed")
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_file(folder: str | Path, rank: int) -> Path:
    return Path(folder) / f"rng-{rank}.pt"


def save_rng_file(folder: Path, rank: int, state: dict[str, Any]) -> None:
    write_atomic(rng_file(folder, rank), lambda tmp: torch.save(state, tmp))


def load_rng_file(folder: str | Path, rank: int) -> dict[str, Any] | None:
    """This process's RNG state, or ``None`` when the run had fewer processes."""
    path = rng_file(folder, rank)
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def split_state(model: nn.Module, frozen_prefix: str) -> dict[str, torch.Tensor]:
    """The state dict without the frozen backbone's entries (those under ``frozen_prefix``, given by the
    task: ``DenseTaskSpec.frozen_prefix``)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(frozen_prefix)}


def backbone_source(spec: Any, weights: str | Path | None, normalization: Normalization) -> dict[str, Any]:
    """How to rebuild the frozen tower: its weights folder, or ``None`` (its weights are in the checkpoint),
    and the input normalisation the run trained with."""
    return {
        "spec": spec,
        "weights": str(Path(weights).resolve()) if weights is not None else None,
        "normalization": normalization.to_dict(),
    }


def recorded_normalization(source: dict[str, Any]) -> Normalization:
    """The normalisation a checkpoint's ``backbone`` entry records; ImageNet's for checkpoints from before
    it was recorded (the dense code then normalised every backbone's inputs with ImageNet's mean/std)."""
    recorded = source.get("normalization")
    return IMAGENET if recorded is None else Normalization.from_dict(recorded)


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

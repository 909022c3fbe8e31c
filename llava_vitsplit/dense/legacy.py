"""Converting the old pickled dense checkpoints (``step-<N>.pt``, format ``llava_vitsplit.dense/1``).

The old file is read with ``torch.load(weights_only=True)``; the only classes allowed beyond tensors and
plain containers are NumPy's array reconstruction and ``uint32`` dtype, which its NumPy RNG state
needs. Anything else is refused, so a hostile file cannot run code here either.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llava_vitsplit.dense.checkpoint import (
    LEGACY_FORMAT,
    save_checkpoint,
    save_rng_file,
    step_folder,
)
from llava_vitsplit.dense.resume import numpy_state
from llava_vitsplit.util.atomic import temporary_name


def _numpy_array_globals() -> list[Any]:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def read_legacy(path: str | Path) -> dict[str, Any]:
    """The old payload, read without running any code from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"old checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path} holds objects other than tensors, plain containers and NumPy arrays, so it is not "
            f"read (unpickling them could run code): {str(exc).splitlines()[-1]}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != LEGACY_FORMAT:
        raise ValueError(f"{path} is not an old llava-vitsplit dense checkpoint (format {LEGACY_FORMAT})")
    return payload


def convert_legacy(path: str | Path) -> Path:
    """Write ``step-<N>/`` next to the old ``step-<N>.pt``; returns the new folder."""
    path = Path(path)
    payload = read_legacy(path)
    step = int(payload["step"])
    final = step_folder(path.parent, step)
    source = payload["backbone"]
    meta = {
        "step": step,
        "presets": payload["presets"],
        "backbone": {"spec": source["spec"], "weights": source.get("weights")},
    }
    backbone = source.get("state_dict") if source.get("weights") is None else None
    # The old format saved no data position or log window; resuming from it starts a fresh epoch.
    trainer_state = {"optimizer": payload["optimizer"], "scheduler": payload["scheduler"], "step": step}
    rng = payload["rng"]
    staging = temporary_name(final)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_rng_file(
        staging,
        0,
        {"python": rng["python"], "numpy": numpy_state(rng["numpy"]), "torch": rng["torch"], "cuda": []},
    )
    return save_checkpoint(staging, final, meta, payload["model"], backbone, trainer_state)

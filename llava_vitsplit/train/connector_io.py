"""Stage-1 output: the connector alone (``connector.safetensors``) plus the settings that built it.

``connector_config.json`` holds the connector type, feature layer, the vision/LLM widths and the settings
the connector's registry spec names (``ConnectorSpec.stage1_settings``; ViT-Split: adapter settings and
fusion output), so stage 2 rebuilds exactly the same connector before loading the weights, and the
parts' provenance (``train.provenance``: names, architectures, depths, image size, tower weights hash),
so stage 2 refuses a connector trained for another tower or LLM unless told ``allow_mismatch`` (the same
parts at another path are accepted with a logged note). Under ZeRO-3 the partitioned parameters are
gathered before saving, so the file never holds size-0 tensors. Files are written atomically.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llava_vitsplit.model.connector_registry import connector_spec
from llava_vitsplit.train.provenance import part_provenance, provenance_mismatch, provenance_moved
from llava_vitsplit.util.atomic import write_atomic

logger = logging.getLogger(__name__)

CONNECTOR_WEIGHTS = "connector.safetensors"
CONNECTOR_CONFIG = "connector_config.json"
# Settings of every connector that must agree between the stage-1 connector and the stage-2 model; the
# connector's spec adds its own (``stage1_settings``).
COMMON_SETTINGS = ("connector_type", "vision_feature_layer", "vision_hidden_size", "text_hidden_size")


def connector_settings(model, **extra) -> dict:
    """The settings that must match (``COMMON_SETTINGS`` + the spec's ``stage1_settings``), then ``extra``."""
    config = model.config
    own = connector_spec(config.connector_type).stage1_settings
    return {
        "connector_type": config.connector_type,
        **{name: getattr(config, name) for name in own},
        "vision_feature_layer": config.vision_feature_layer,
        "vision_hidden_size": config.vision_config.hidden_size,
        "text_hidden_size": config.text_config.hidden_size,
        **extra,
    }


def _gathered(parameters: list[torch.nn.Parameter]):
    if any(hasattr(p, "ds_id") for p in parameters):  # ZeRO-3 partitioned
        import deepspeed

        return deepspeed.zero.GatheredParameters(parameters, modifier_rank=None)
    return nullcontext()


def save_connector(
    model,
    out_dir: str | Path,
    is_main_process: bool = True,
    provenance: dict | None = None,
    **parts: str,
) -> Path:
    """Write ``connector.safetensors`` + ``connector_config.json`` into ``out_dir``; returns the weights path.

    ``provenance`` is ``part_provenance`` of the model as built (required under ZeRO-3, where the tower is
    partitioned by now); without it, it is computed here from ``parts`` (``vision_tower``, ``language_model``).
    """
    out_dir = Path(out_dir)
    if provenance is None:
        provenance = part_provenance(model, **parts)
    connector = model.connector
    with _gathered(list(connector.parameters())):
        state = {
            name: t.detach().to("cpu").clone().contiguous() for name, t in connector.state_dict().items()
        }
    if is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        settings = connector_settings(model, **provenance)
        write_atomic(
            out_dir / CONNECTOR_WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": "pt"})
        )
        write_atomic(out_dir / CONNECTOR_CONFIG, lambda p: p.write_text(json.dumps(settings, indent=2)))
    return out_dir / CONNECTOR_WEIGHTS


def resolve_connector_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / CONNECTOR_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"stage-1 connector not found: {path} (expected the stage-1 output folder)")
    return path


def read_connector_settings(path: str | Path) -> dict:
    config_path = resolve_connector_path(path).with_name(CONNECTOR_CONFIG)
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: cannot tell which connector {path} holds")
    return json.loads(config_path.read_text())


def load_connector(
    model, path: str | Path, provenance: dict | None = None, allow_mismatch: bool = False
) -> None:
    """Load stage-1 connector weights into ``model`` (checks settings, provenance and every tensor's shape).

    ``provenance``: ``part_provenance`` of ``model``; a connector trained for other parts is refused
    (naming what differs) unless ``allow_mismatch``, which loads it with a warning.
    """
    weights = resolve_connector_path(path)
    saved, current = read_connector_settings(weights), connector_settings(model)
    mismatched = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if mismatched:
        raise ValueError(
            f"connector {weights} was trained with other settings (saved, current): {mismatched}"
        )
    if provenance is not None:
        check_provenance(weights, saved, provenance, allow_mismatch)
    state = load_file(str(weights))
    connector = model.connector
    expected = connector.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"connector {weights}: missing keys {missing}, unexpected keys {unexpected}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"connector {weights}: {name} has shape {tuple(tensor.shape)}, model expects {tuple(expected[name].shape)}"
            )
    connector.load_state_dict(state, strict=True)


def _lines(differences: dict[str, tuple]) -> str:
    return "\n".join(
        f"  {key}: trained for {was!r}, this run has {now!r}" for key, (was, now) in differences.items()
    )


def check_provenance(weights: Path, saved: dict, current: dict, allow_mismatch: bool) -> None:
    """Refuse a connector whose parts differ in content; a part that only moved is a logged note."""
    differs, moved = provenance_mismatch(saved, current), provenance_moved(saved, current)
    if not differs:
        if moved:
            logger.warning(
                "stage-1 connector %s: the parts were read from other paths at stage 1, with the same "
                "content (weights hash, architecture, depth, sizes, vocabulary); loading it:\n%s",
                weights,
                _lines(moved),
            )
        return
    message = f"stage-1 connector {weights} was trained for other parts:\n{_lines({**differs, **moved})}"
    if not allow_mismatch:
        raise ValueError(f"{message}\nPass --allow_connector_mismatch True to load it anyway.")
    logger.warning("%s\nloading it anyway (--allow_connector_mismatch)", message)

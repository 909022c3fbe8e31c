"""Named VLM presets, shipped as JSON data beside this module.

Each ``<name>.json`` names its parts (hub ids for a real build), embeds the vision and text configs by
reference to ``configs/<config>.json`` (the real CLIP-L/336 and Vicuna v1.5 configs, so nothing is
downloaded to describe a model), the connector settings, and the training recipe (``train``: the
trainer's defaults per stage, ``presets/train_recipe.py``, checked when the presets are read).
A preset may say ``"extends": "<parent>"`` and give only its differences: objects merge key by key
(recursively), any other value (a string, number, list or ``null``) replaces the parent's. The parent is
looked up in the same folder, then among the shipped presets; an unknown parent or a cycle is an error
naming the file. Every reader (``get_preset``, ``--print_config``, ``params``, the scripts) sees the
resolved preset.
``get_preset(name)`` raises a ``KeyError`` listing the valid names for an unknown one.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from llava_vitsplit.presets.train_recipe import canonical_names, check_train_recipe

PRESET_DIR = Path(__file__).parent
CONFIG_DIR = PRESET_DIR / "configs"


@dataclass(frozen=True)
class VLMPreset:
    name: str
    description: str
    vision_tower: str
    language_model: str
    vision_config: dict[str, Any]
    text_config: dict[str, Any]
    connector_type: str
    adapter: dict[str, Any] | None
    fusion_output: str
    vision_feature_layer: int
    vision_feature_select_strategy: str
    image_aspect_ratio: str
    train: dict[str, dict[str, Any]] = field(default_factory=dict)

    def model_config(self, image_token_index: int | None = None):
        """The ``LlavaViTSplitConfig`` this preset builds; the ``<image>`` token is appended to the vocab.

        Deep copies: transformers' config classes edit nested dicts in place (Llama-3.1's ``rope_scaling``
        gains ``rope_theta``), and the presets are read once and shared by every reader."""
        from llava_vitsplit.model.configuration import LlavaViTSplitConfig

        text_config = copy.deepcopy(self.text_config)
        if image_token_index is None:
            image_token_index = text_config["vocab_size"]
            text_config["vocab_size"] += 1
        return LlavaViTSplitConfig(
            vision_config=copy.deepcopy(self.vision_config),
            text_config=text_config,
            image_token_index=image_token_index,
            connector_type=self.connector_type,
            adapter=copy.deepcopy(self.adapter),
            fusion_output=self.fusion_output,
            vision_feature_layer=self.vision_feature_layer,
            vision_feature_select_strategy=self.vision_feature_select_strategy,
            tie_word_embeddings=bool(text_config.get("tie_word_embeddings", False)),
        )


def _load_config(ref: str | dict) -> dict[str, Any]:
    if isinstance(ref, dict):
        return ref
    path = CONFIG_DIR / f"{ref}.json"
    if not path.is_file():
        raise FileNotFoundError(f"preset config {ref!r} not found at {path}")
    return json.loads(path.read_text())


@cache
def vlm_presets() -> dict[str, VLMPreset]:
    """All VLM presets by name, read from the JSON files beside this module."""
    return read_presets(PRESET_DIR)


def deep_merge(parent: dict, child: dict) -> dict:
    """``child`` over ``parent``: objects merge key by key, any other value replaces the parent's."""
    merged = dict(parent)
    for key, value in child.items():
        both_objects = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = deep_merge(merged[key], value) if both_objects else value
    return merged


def _preset_files(folder: Path) -> dict[str, Path]:
    files = {path.stem: path for path in sorted(Path(folder).glob("*.json"))}
    if Path(folder).resolve() != PRESET_DIR.resolve():
        files = {path.stem: path for path in sorted(PRESET_DIR.glob("*.json"))} | files
    return files


def resolve_preset_file(path: Path, files: dict[str, Path], chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw JSON of preset file ``path`` with its ``extends`` chain merged in (parents from ``files``)."""
    if path in chain:
        cycle = " -> ".join(p.stem for p in (*chain, path))
        raise ValueError(f"malformed preset file {chain[0]}: 'extends' cycle {cycle}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed preset file {path}: not valid JSON ({exc})") from exc
    if isinstance(data.get("train"), dict):  # aliases renamed before merging, so a child's alias overrides
        for stage, fields in data["train"].items():
            canonical_names(fields, f"{path}: train.{stage}")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or parent not in files:
        raise ValueError(
            f"malformed preset file {path}: 'extends' names unknown preset {parent!r}; "
            f"valid presets: {', '.join(sorted(files))}"
        )
    return deep_merge(resolve_preset_file(files[parent], files, (*chain, path)), data)


def read_presets(folder: Path) -> dict[str, VLMPreset]:
    """The VLM presets of the ``*.json`` files in ``folder``, ``extends`` resolved (parents: this folder,
    then the shipped presets); a malformed one raises naming its file."""
    presets, files = {}, _preset_files(folder)
    for path in sorted(Path(folder).glob("*.json")):
        data = resolve_preset_file(path, files)
        try:
            data["vision_config"] = _load_config(data["vision_config"])
            data["text_config"] = _load_config(data["text_config"])
            data["train"] = check_train_recipe(data.get("train", {}), path)
            presets[path.stem] = VLMPreset(name=path.stem, **data)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed preset file {path}: {exc}") from exc
    return presets


def get_preset(name: str) -> VLMPreset:
    presets = vlm_presets()
    if name not in presets:
        raise KeyError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(presets))}")
    return presets[name]


def preset_file(name: str) -> Path:
    """The JSON file of preset ``name`` (for messages)."""
    return PRESET_DIR / f"{name}.json"


def train_recipe(name: str, stage: str) -> dict[str, Any]:
    """Preset ``name``'s training recipe for ``stage``; a ``KeyError`` names the file if it has none."""
    train = get_preset(name).train
    if stage not in train:
        raise KeyError(
            f"{preset_file(name)} has no training recipe for stage {stage!r} (train.{stage}); "
            f"it has: {', '.join(train) or 'none'}"
        )
    return dict(train[stage])

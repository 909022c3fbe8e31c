"""A preset's training recipe: its ``train`` block, the trainer's defaults per stage.

``{"pretrain": {...}, "finetune": {...}, "finetune_lora": {...}}`` (``finetune_lora`` only for presets
with LoRA defaults): keys are the stage table's names (``llava_vitsplit.stages.STAGES``), each maps argument
names of ``llava-vitsplit train`` to values. Which stage a run is comes from ``--stage`` or LLaVA's flags
(``stages.resolve_stage``). Only the fields of ``TRAIN_RECIPE_FIELDS`` may appear,
with their types; ``check_train_recipe`` names the preset file and the field of any other entry. LLaVA's
name ``version`` is read as ``conv_template``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava_vitsplit.stages import STAGES

# argument name -> type of its value (a float field takes a JSON integer too; a bool is no number)
TRAIN_RECIPE_FIELDS: dict[str, type] = {
    "conv_template": str,
    "image_aspect_ratio": str,
    "group_by_modality_length": bool,
    "learning_rate": float,
    "mm_projector_lr": float,
    "task_head_lr_multiplier": float,
    "deform_offset_lr_multiplier": float,
    "global_batch_size": int,
    "per_device_train_batch_size": int,
    "num_train_epochs": float,
    "weight_decay": float,
    "warmup_ratio": float,
    "lr_scheduler_type": str,
    "model_max_length": int,
    "lora_r": int,
    "lora_alpha": int,
    "lora_dropout": float,
}


def _type_ok(value: Any, expected: type) -> bool:
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def canonical_names(fields: dict[str, Any], where: str) -> dict[str, Any]:
    """``fields`` (one stage of a recipe, changed in place) with LLaVA's ``version`` named ``conv_template``."""
    if isinstance(fields, dict) and "version" in fields:
        if "conv_template" in fields:
            raise ValueError(f"{where} sets both conv_template and its alias version")
        fields["conv_template"] = fields.pop("version")
    return fields


def check_train_recipe(train: Any, path: Path) -> dict[str, dict[str, Any]]:
    """``train`` if it is a valid training recipe, else a ``ValueError`` naming ``path`` and the field."""
    if not isinstance(train, dict):
        raise ValueError(f"{path}: 'train' must be an object of stages, got {type(train).__name__}")
    for stage, fields in train.items():
        if stage not in STAGES:
            raise ValueError(f"{path}: unknown stage train.{stage}; valid: {', '.join(STAGES)}")
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: train.{stage} must be an object, got {type(fields).__name__}")
        canonical_names(fields, f"{path}: train.{stage}")
        for name, value in fields.items():
            expected = TRAIN_RECIPE_FIELDS.get(name)
            if expected is None:
                raise ValueError(
                    f"{path}: unknown field train.{stage}.{name}; valid: {', '.join(TRAIN_RECIPE_FIELDS)}"
                )
            if not _type_ok(value, expected):
                raise ValueError(f"{path}: train.{stage}.{name} must be {expected.__name__}, got {value!r}")
    return train

"""The training recipe of ``--train_recipe`` (default: ``--preset``) as the command line's defaults.

The stage is ``--stage``, else the one LLaVA's flags select (``--tune_mm_mlp_adapter True``:
``pretrain``, ``--lora_enable True``: ``finetune_lora``, neither: ``finetune``; ``stages.resolve_stage``).
The recipe's ``train.<stage>`` entries go before the given arguments, so every argument given on the command line wins. A global batch
(``--global_batch_size``, from either) sets ``--gradient_accumulation_steps`` to
``global / (per-device batch x WORLD_SIZE)`` unless that is given too.
"""

from __future__ import annotations

import argparse
import os

from transformers.hf_argparser import string_to_bool

from llava_vitsplit.presets import train_recipe
from llava_vitsplit.stages import STAGE_FLAGS, resolve_stage

HF_DEFAULT_PER_DEVICE_BATCH = 8  # transformers' per_device_train_batch_size default


def _flag_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--preset")
    parser.add_argument("--train_recipe")
    parser.add_argument("--stage")
    for flag in (*STAGE_FLAGS, "freeze_backbone"):
        parser.add_argument(f"--{flag}", type=string_to_bool, nargs="?", const=True, default=False)
    return parser


def stage_from_argv(argv: list[str]) -> str:
    """The name of the run's stage (a conflict between ``--stage`` and LLaVA's flags is a ``ValueError``)."""
    flags, _ = _flag_parser().parse_known_args(argv)
    selecting = {flag: getattr(flags, flag) for flag in STAGE_FLAGS}
    return resolve_stage(flags.stage, selecting, flags.freeze_backbone).name


def _format(value) -> str:
    return str(value)  # bool -> True/False, float -> its shortest exact repr


def recipe_argv(argv: list[str]) -> list[str]:
    """The recipe's arguments for this command line (none without ``--train_recipe`` or ``--preset``)."""
    flags, _ = _flag_parser().parse_known_args(argv)
    name = flags.train_recipe or flags.preset
    if not name:
        return []
    stage = stage_from_argv(argv)
    out = []
    for field, value in train_recipe(name, stage).items():
        out += [f"--{field}", _format(value)]
    return out


def last_value(argv: list[str], flag: str) -> str | None:
    """The value the last ``flag VALUE`` / ``flag=VALUE`` in ``argv`` gives (argparse's: the last wins)."""
    value = None
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith(flag + "="):
            value = token[len(flag) + 1 :]
    return value


def accumulation_argv(argv: list[str], world_size: int) -> list[str]:
    """``--gradient_accumulation_steps N`` from the global batch, when one is given and N is not."""
    global_batch = last_value(argv, "--global_batch_size")
    if global_batch is None or last_value(argv, "--gradient_accumulation_steps") is not None:
        return []
    per_device = int(last_value(argv, "--per_device_train_batch_size") or HF_DEFAULT_PER_DEVICE_BATCH)
    denominator = per_device * world_size
    if int(global_batch) % denominator:
        raise ValueError(
            f"--global_batch_size {global_batch} is not a multiple of --per_device_train_batch_size "
            f"{per_device} x {world_size} processes (WORLD_SIZE)"
        )
    return ["--gradient_accumulation_steps", str(int(global_batch) // denominator)]


def with_recipe(argv: list[str], world_size: int | None = None) -> list[str]:
    """``argv`` preceded by its training recipe and followed by the derived gradient accumulation."""
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    merged = recipe_argv(argv) + list(argv)
    return merged + accumulation_argv(merged, world_size)

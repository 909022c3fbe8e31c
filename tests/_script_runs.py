"""Run the real ``scripts/*.sh`` in one CPU process (or several with ``CPU_PROCESSES``) on tiny parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava_vitsplit.testing.tiny_parts import save_tiny_parts, tiny_adapter_args
from llava_vitsplit.train.connector_io import save_connector
from llava_vitsplit.train.launch_env import free_port, single_process_env  # noqa: F401 (re-exported)
from llava_vitsplit.train.model_setup import BuildRecipe, build_from_recipe

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DATA = ROOT / "tests" / "data"  # the records and images shipped with the tests
SEED = 0


def torchrun_settings(ranks: int = 2) -> dict[str, str]:
    """A script's settings for ``ranks`` CPU processes started by torchrun on a fresh port."""
    launcher = (
        f"{sys.executable} -m torch.distributed.run --nproc_per_node {ranks} --master_port {free_port()} -m"
    )
    return {"CPU_PROCESSES": str(ranks), "LAUNCHER": launcher}


def script_env(parts, **overrides) -> dict[str, str]:
    env = {**os.environ, **single_process_env()}
    env.update(
        PRESET="",
        MODEL_NAME_OR_PATH=str(parts["llm"]),
        VISION_TOWER=str(parts["vision"]),
        IMAGE_FOLDER=str(SHIPPED_DATA),
        BF16="False",
        TF32="False",
        NUM_WORKERS="0",
        GLOBAL_BATCH_SIZE="4",
        PER_DEVICE_BATCH_SIZE="4",
        SEED=str(SEED),
        OMP_NUM_THREADS="2",
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def run_script(script: str, env: dict, *args: str, log: Path) -> None:
    with open(log, "w") as out:
        code = subprocess.call(
            ["bash", str(ROOT / "scripts" / script), *args], env=env, stdout=out, stderr=out
        )
    if code != 0:
        pytest.fail(
            f"{script} exited {code}; last lines of {log}:\n"
            + "".join(log.read_text().splitlines(True)[-40:])
        )


def losses(run_dir: Path) -> dict[int, float]:
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def train_argv(parts, out: Path, *extra: str) -> list[str]:
    """``llava-vitsplit train`` arguments for an in-process CPU run on the tiny parts (stage 2, no DeepSpeed)."""
    return [
        "--model_name_or_path", str(parts["llm"]),
        "--vision_tower", str(parts["vision"]),
        "--data_path", str(SHIPPED_DATA / "finetune.json"),
        "--image_folder", str(SHIPPED_DATA),
        "--output_dir", str(out),
        "--report_to", "none",
        "--per_device_train_batch_size", "4",
        "--dataloader_num_workers", "0",
        "--use_cpu", "True",
        *tiny_adapter_args(),
        *extra,
    ]  # fmt: skip


def parts_and_stage1(root: Path) -> dict:
    """Tiny parts under ``root/parts`` and an untrained stage-1 connector for them in ``root/stage1``."""
    parts = save_tiny_parts(root / "parts", SHIPPED_DATA)
    recipe = tiny_recipe(parts)
    model, _ = build_from_recipe(recipe)
    save_connector(
        model, root / "stage1", vision_tower=recipe.vision_tower, language_model=recipe.language_model
    )
    return {"parts": parts, "stage1": root / "stage1", "root": root}


def stage2_settings(setup: dict, out: Path, **env) -> dict:
    """The environment of ``finetune.sh`` from ``setup`` (``parts_and_stage1`` plus ``data``): one epoch at
    lr 5e-3, global batch 2, one thread per process; ``env`` adds to it or overrides it."""
    settings = {
        "DATA_PATH": setup["data"],
        "PRETRAIN_DIR": setup["stage1"],
        "OUTPUT_DIR": out,
        "NUM_EPOCHS": 1,
        "LEARNING_RATE": "5e-3",
        "GLOBAL_BATCH_SIZE": 2,
        "OMP_NUM_THREADS": 1,
        **env,
    }
    return script_env(setup["parts"], **settings)


def tiny_recipe(parts) -> BuildRecipe:
    """The build the scripts make from the tiny parts with ``tiny_adapter_args()`` (seeded alike)."""
    return BuildRecipe(
        vision_tower=str(parts["vision"]),
        language_model=str(parts["llm"]),
        connector_type="vitsplit",
        adapter={"num_task_layers": 1, "prior_start": 0, "num_prior_layers": 2},
        fusion_output="vision_mlp",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_aspect_ratio="pad",
        seed=SEED,
    )

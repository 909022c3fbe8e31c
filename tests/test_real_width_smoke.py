"""Real-width smoke (slow, not in CI): the real ``scripts/pretrain.sh`` then ``scripts/finetune.sh`` with the
real CLIP-L/336 tower and the Vicuna-7B config (random weights, from the presets' embedded configs) at a
reduced LLM depth, a few steps of each stage on the CPU, with each stage's peak RSS recorded.

It catches shape and memory errors at real sizes (576 image tokens, width 1024 -> 4096, vocab 32000)
before anyone rents GPUs. Settings: ``SMOKE_LLM_LAYERS`` (default 1), ``SMOKE_STEPS`` (default 2);
``SMOKE_STAGES`` (default ``pretrain,finetune``; ``pretrain`` alone where RAM is short: stage 2 trains
648M fp32 parameters, ~10.4 GB of weights, gradients and Adam states); the figures go to ``SMOKE_REPORT``
(a JSON path) if set.

    SMOKE_REPORT=smoke.json .venv/bin/python -m pytest -m slow tests/test_real_width_smoke.py -s
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _script_runs import SHIPPED_DATA

from llava_vitsplit.presets import get_preset
from llava_vitsplit.testing.tiny_parts import tokenizer_corpus
from llava_vitsplit.train.connector_io import CONNECTOR_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
LLM_LAYERS = int(os.environ.get("SMOKE_LLM_LAYERS", "1"))
STEPS = int(os.environ.get("SMOKE_STEPS", "2"))
STAGES = os.environ.get("SMOKE_STAGES", "pretrain,finetune").split(",")  # stage 2 needs ~16 GB free RAM
PRESET = "llava-v1.5-7b"

pytestmark = pytest.mark.slow


def save_real_width_parts(out_dir: Path, llm_layers: int) -> dict[str, Path]:
    """Random CLIP-L/336 (+ its image processor) and a Vicuna-7B-config Llama with ``llm_layers`` layers."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    from llava_vitsplit.tokenizers import train_llama_sentencepiece

    preset = get_preset(PRESET)
    torch.manual_seed(0)
    vision_dir, llm_dir = out_dir / "vision", out_dir / "llm"
    vision_config = {k: v for k, v in preset.vision_config.items() if k != "model_type"}
    CLIPVisionModel(CLIPVisionConfig(**vision_config)).save_pretrained(vision_dir)
    size = vision_config["image_size"]
    CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    ).save_pretrained(vision_dir)
    text_config = {k: v for k, v in preset.text_config.items() if k != "model_type"}
    LlamaForCausalLM(LlamaConfig(**{**text_config, "num_hidden_layers": llm_layers})).save_pretrained(llm_dir)
    files = sorted(SHIPPED_DATA.glob("*.json"))
    spm_dir = train_llama_sentencepiece(out_dir / "sentencepiece", tokenizer_corpus(files), vocab_size=512)
    for name in ("tokenizer.model", "tokenizer_config.json"):  # shipped like Vicuna: sentencepiece only
        (llm_dir / name).write_bytes((spm_dir / name).read_bytes())
    return {"vision": vision_dir, "llm": llm_dir}


def run_with_peak_rss(script: str, env: dict, log: Path) -> tuple[float, float]:
    """Run ``scripts/<script>`` in a fresh helper process; returns (seconds, peak RSS MiB of the run)."""
    helper = (
        "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    tic = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, "-c", helper, "bash", str(ROOT / "scripts" / script), "--max_steps", str(STEPS)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
    seconds = time.perf_counter() - tic
    if proc.returncode != 0:
        pytest.fail(f"{script} exited {proc.returncode}; last lines of {log}:\n" + log.read_text()[-4000:])
    return seconds, int(proc.stdout.strip().splitlines()[-1]) / 1024


def smoke_env(parts: dict[str, Path], **settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 500),
        LAUNCHER=f"{sys.executable} -m", PRESET=PRESET, MODEL_NAME_OR_PATH=str(parts["llm"]),
        VISION_TOWER=str(parts["vision"]), IMAGE_FOLDER=str(SHIPPED_DATA), BF16="False", TF32="False",
        NUM_WORKERS="0", GLOBAL_BATCH_SIZE="1", PER_DEVICE_BATCH_SIZE="1", SAVE_STEPS="1000",
        GRADIENT_CHECKPOINTING="True", OMP_NUM_THREADS="2",
    )  # fmt: skip
    env.update({k: str(v) for k, v in settings.items()})
    return env


def test_real_scripts_run_at_real_width(tmp_path):
    parts = save_real_width_parts(tmp_path / "parts", LLM_LAYERS)
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    env1 = smoke_env(parts, DATA_PATH=SHIPPED_DATA / "pretrain.json", OUTPUT_DIR=stage1)
    seconds1, rss1 = run_with_peak_rss("pretrain.sh", env1, tmp_path / "pretrain.log")
    assert (stage1 / CONNECTOR_WEIGHTS).is_file()
    report = {"preset": PRESET, "llm_layers": LLM_LAYERS, "steps_per_stage": STEPS}
    report["stage1"] = {"seconds": seconds1, "peak_rss_mib": rss1}
    if "finetune" in STAGES:
        report["stage2"] = run_stage2(parts, stage1, stage2, tmp_path)
    report["test_process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report))
    if os.environ.get("SMOKE_REPORT"):
        from llava_vitsplit.util.atomic import write_atomic

        write_atomic(Path(os.environ["SMOKE_REPORT"]), lambda p: p.write_text(json.dumps(report, indent=2)))


def run_stage2(parts: dict[str, Path], stage1: Path, stage2: Path, tmp_path: Path) -> dict:
    env2 = smoke_env(parts, DATA_PATH=SHIPPED_DATA / "finetune.json", PRETRAIN_DIR=stage1, OUTPUT_DIR=stage2)
    seconds2, rss2 = run_with_peak_rss("finetune.sh", env2, tmp_path / "finetune.log")
    assert (stage2 / "model.safetensors").is_file() or any(stage2.glob("model*.safetensors"))
    history = json.loads((stage2 / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == STEPS and all(loss == loss and loss > 0 for loss in losses)  # finite, positive
    return {"seconds": seconds2, "peak_rss_mib": rss2, "losses": losses}

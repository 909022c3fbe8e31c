"""Two CPU ranks (torchrun + gloo, the real ``scripts/finetune.sh``): failures, preemption, ZeRO-3 non-finite.

- A failure injected on one rank (``LLAVA_VITSPLIT_FAULT``: a failed save, a data-worker exception, an
  out-of-memory error) ends the run non-zero within ``FAILURE_BOUND_S``; every rank logs the failing
  rank's error and the last good checkpoint stays intact.
- SIGTERM on one rank mid-run: every rank finishes the step, the step's checkpoint is written, the run
  exits 75; ``--resume_from_checkpoint latest`` then gives the uninterrupted run's per-step losses.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from _script_runs import ROOT, SHIPPED_DATA, parts_and_stage1, stage2_settings, torchrun_settings
from safetensors.torch import load_file

from llava_vitsplit.train.faults import FAULT_ENV
from llava_vitsplit.train.step_guard import EXIT_PREEMPTED

pytestmark = pytest.mark.e2e

FAILURE_BOUND_S = 60  # from the failure to the last rank's exit
SEQUENTIAL = ("--group_by_modality_length", "False", "--train_sampling_strategy", "sequential")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    setup = parts_and_stage1(tmp_path_factory.mktemp("cluster"))
    root = setup["root"]
    records = json.loads((SHIPPED_DATA / "finetune.json").read_text())[:12]  # 6 steps of 2 samples
    (root / "data.json").write_text(json.dumps(records))
    return {**setup, "data": root / "data.json"}


def finetune(setup, name: str, *args: str, ranks: int = 2, **env) -> tuple[int, Path, str, float]:
    """Run ``finetune.sh``; returns (exit code, output dir, log text, seconds)."""
    out = setup["root"] / name
    settings = {"SAVE_STEPS": 2, "SAVE_TOTAL_LIMIT": 3, "PER_DEVICE_BATCH_SIZE": 2 // ranks, **env}
    if ranks > 1:
        settings.update(torchrun_settings(ranks))
    log = setup["root"] / f"{name}.txt"
    start = time.monotonic()
    with open(log, "w") as sink:
        code = subprocess.call(
            ["bash", str(ROOT / "scripts" / "finetune.sh"), *SEQUENTIAL, *args],
            env=stage2_settings(setup, out, **settings),
            stdout=sink,
            stderr=sink,
            timeout=600,
        )
    return code, out, log.read_text(), time.monotonic() - start


def losses(state_file: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in json.loads(state_file.read_text())["log_history"] if "loss" in e}


def assert_intact(checkpoint: Path) -> None:
    """A complete checkpoint: its state names its step and its weights load."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert checkpoint.name == f"checkpoint-{state['global_step']}"
    assert load_file(checkpoint / "model.safetensors")


# The worker fault names the batch: accelerate's loader fetches one batch ahead, so batch 4 fails in step 3.
@pytest.mark.parametrize(
    ("zero", "fault", "message"),
    [
        ("zero2", "save@4:0", "NoSpaceLeft: [Errno 28] no space left on"),
        ("zero2", "worker@4:1", "InjectedWorkerError: Caught InjectedWorkerError in DataLoader worker"),
        ("zero3", "oom@3:0", "OutOfMemoryError: injected out-of-memory error at step 3"),
        ("zero3", "save@4:1", "NoSpaceLeft: [Errno 28] no space left on"),
    ],
)
def test_one_rank_failing_stops_every_rank_keeping_the_last_checkpoint(setup, zero, fault, message):
    failing = int(fault.rsplit(":", 1)[1])
    code, out, log, seconds = finetune(
        setup,
        f"fail_{zero}_{fault.replace('@', '_').replace(':', '_')}",
        DEEPSPEED_CONFIG=f"./scripts/{zero}.json",
        NUM_WORKERS=1,
        **{FAULT_ENV: fault},
    )
    ended = datetime.now()
    assert code != 0, log[-3000:]
    failed = f"this rank failed, stopping every rank: rank {failing} ("
    assert failed in log and message in log, log[-3000:]
    assert f"stopping: rank {failing} (" in log.replace(failed, ""), log[-3000:]  # the other rank
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert_intact(out / "checkpoint-2")
    failure_line = next(line for line in log.splitlines() if failed in line)
    failed_at = datetime.strptime(failure_line[:23], "%Y-%m-%d %H:%M:%S,%f")
    assert (ended - failed_at).total_seconds() < FAILURE_BOUND_S


def test_sigterm_on_one_rank_checkpoints_and_the_resumed_run_matches(setup):
    code, reference, log, _ = finetune(setup, "uninterrupted", DEEPSPEED_CONFIG="./scripts/zero3.json")
    assert code == 0, log[-3000:]
    code, out, log, _ = finetune(
        setup, "preempted", DEEPSPEED_CONFIG="./scripts/zero3.json", **{FAULT_ENV: "sigterm@3:1"}
    )
    assert code != 0 and f"exitcode  : {EXIT_PREEMPTED}" in log, log[-3000:]  # torchrun reports it as 1
    assert "SIGTERM received: finishing this step" in log
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert_intact(out / "checkpoint-3")
    assert not (out / "config.json").exists() and not (out / "rank0.pid").exists()
    code, out, log, _ = finetune(
        setup, "preempted", "--resume_from_checkpoint", "latest", DEEPSPEED_CONFIG="./scripts/zero3.json"
    )
    assert code == 0, log[-3000:]
    ours, expected = losses(out / "trainer_state.json"), losses(reference / "trainer_state.json")
    assert sorted(ours) == sorted(expected) == list(range(1, 7))
    assert ours == pytest.approx(expected, rel=2e-5, abs=1e-6)


def test_zero3_skips_a_nonfinite_step(setup):
    code, out, log, _ = finetune(
        setup,
        "nonfinite_zero3",
        "--max_steps", "3",
        ranks=1,
        DEEPSPEED_CONFIG="./scripts/zero3.json",
        SAVE_STEPS=1,
        **{FAULT_ENV: "nonfinite@3"},
    )  # fmt: skip
    assert code == 0, log[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [(e["step"], len(e["sample_ids"])) for e in history if "nonfinite_step" in e] == [(3, 2)]
    final, before = (
        load_file(out / "model.safetensors"),
        load_file(out / "checkpoint-2" / "model.safetensors"),
    )
    assert final.keys() == before.keys() and all(torch.equal(final[k], before[k]) for k in before)
    first = load_file(out / "checkpoint-1" / "model.safetensors")
    assert any(not torch.equal(first[k], before[k]) for k in before)  # a step that trains moves weights

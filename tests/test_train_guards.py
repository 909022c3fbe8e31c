"""The non-finite guard (plain PyTorch here, in-process; ZeRO-3 in the e2e case) and fault injection.

An inf loss injected at one step (``LLAVA_VITSPLIT_FAULT=nonfinite@STEPS``) must skip that optimizer step
(the weights and optimizer state stay those of the step before), count it, log it with its sample ids and
write no checkpoint for it; ``--max_nonfinite_steps`` such steps in a row stop the run with exit code 3
and leave the last good checkpoint the latest one.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from _script_runs import SHIPPED_DATA, train_argv
from safetensors.torch import load_file

from llava_vitsplit.testing.tiny_parts import save_tiny_parts
from llava_vitsplit.train.faults import FAULT_ENV, parse_fault
from llava_vitsplit.train.run import main, resume_target
from llava_vitsplit.train.step_guard import EXIT_NONFINITE, EXIT_PREEMPTED

RECORDS = {r["id"] for r in json.loads((SHIPPED_DATA / "finetune.json").read_text())}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return save_tiny_parts(tmp_path_factory.mktemp("guard_parts"), SHIPPED_DATA)


def run_argv(parts, out: Path, *extra: str) -> list[str]:
    return train_argv(
        parts, out,
        "--per_device_train_batch_size", "2",
        "--learning_rate", "1e-2",
        "--weight_decay", "0.1",
        "--save_strategy", "steps",
        "--save_steps", "1",
        "--logging_steps", "1",
        *extra,
    )  # fmt: skip


def log_entries(path: Path, key: str) -> dict[int, dict]:
    return {e["step"]: e for e in json.loads(path.read_text())["log_history"] if key in e}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_fault_specs_parse_and_bad_ones_name_the_variable():
    fault = parse_fault("save@2,3:1")
    assert (fault.kind, fault.steps, fault.rank) == ("save", frozenset({2, 3}), 1)
    assert parse_fault("nonfinite@4").rank is None
    with pytest.raises(ValueError, match=FAULT_ENV):
        parse_fault("explode@1")
    with pytest.raises(ValueError, match=FAULT_ENV):
        parse_fault("save@two")


def test_one_nonfinite_step_is_skipped_counted_and_logged(parts, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "nonfinite@3")
    out = tmp_path / "run"
    assert main(run_argv(parts, out, "--max_steps", "3")) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    skipped = log_entries(out / "trainer_state.json", "nonfinite_step")
    assert sorted(skipped) == [3] and skipped[3]["nonfinite_step"] == 1
    assert len(skipped[3]["sample_ids"]) == 2 and set(skipped[3]["sample_ids"]) <= RECORDS
    final, before = weights(out), weights(out / "checkpoint-2")  # AdamW + weight decay move every weight
    assert final.keys() == before.keys()
    assert all(torch.equal(final[name], before[name]) for name in before)
    first = weights(out / "checkpoint-1")  # a step that trained does move them
    assert any(not torch.equal(first[name], before[name]) for name in before)


def test_nonfinite_steps_in_a_row_stop_the_run_at_the_last_good_checkpoint(parts, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "nonfinite@2,3")
    out = tmp_path / "run"
    code = main(run_argv(parts, out, "--max_steps", "6", "--max_nonfinite_steps", "2"))
    assert code == EXIT_NONFINITE
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not (out / "config.json").exists()  # no final model
    assert sorted(log_entries(out / "trainer_state.json", "nonfinite_step")) == [2, 3]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3


def test_resume_latest_starts_fresh_without_a_checkpoint_and_takes_the_newest(tmp_path):
    # a requeued job passes the same `--resume_from_checkpoint latest` on its first run too
    assert resume_target("latest", tmp_path) is None
    for step in (2, 10, 3):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / ".staging" / "checkpoint-11").mkdir(parents=True)  # an incomplete save is never resumed
    assert resume_target("latest", tmp_path) == str(tmp_path / "checkpoint-10")
    assert resume_target("True", tmp_path) == str(tmp_path / "checkpoint-10")
    assert resume_target("none", tmp_path) is None
    assert resume_target("/x/checkpoint-4", tmp_path) == "/x/checkpoint-4"


def test_sigusr1_checkpoints_the_current_step_and_exits_for_requeueing(parts, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "sigusr1@2")  # the process signals itself during step 2
    out = tmp_path / "run"
    code = main(run_argv(parts, out, "--max_steps", "5", "--save_steps", "100"))
    assert code == EXIT_PREEMPTED
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # written for the stop
    assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    assert not (out / "config.json").exists() and not (out / "rank0.pid").exists()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handlers are given back

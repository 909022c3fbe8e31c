"""A dense run killed (SIGKILL) mid-run and resumed logs the same losses, step by step, as one that never stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from _dense_helpers import log_records, preset_file, train_argv

from llava_vitsplit.cli import main as cli
from llava_vitsplit.testing.dense_synthetic import make_segmentation_set, tiny_preset

pytestmark = pytest.mark.e2e

MAX_ITERS = 30
# 14 samples, batch 4: 3 steps per epoch, so the step-4 and step-8 checkpoints sit inside an epoch;
# 48-px random crops, scale jitter, flips and colour jitter make every step depend on the augmentation RNG.
FLAGS = ("--max-iters", str(MAX_ITERS), "--log-interval", "1", "--save-interval", "4", "--val-split", "")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dense_resume")
    root = make_segmentation_set(tmp / "data", n_train=14, n_val=0)
    preset = preset_file(tmp, tiny_preset(batch_size=4, crop_size=(48, 48), scale_range=(0.75, 1.25)))
    return tmp, root, preset


def _losses(run) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["lr"]) for r in log_records(run) if "loss" in r]


def _kill_after(argv: list[str], run, step: int) -> None:
    """Run ``argv`` in a subprocess (two data-loader workers) and SIGKILL it once ``step`` is logged."""
    argv = [a if a != "0" or argv[i - 1] != "--num-workers" else "2" for i, a in enumerate(argv)]
    code = f"from llava_vitsplit.cli import main; main({argv!r})"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    log, deadline = run / "log.jsonl", time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and f'"step": {step},' in log.read_text():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-3000:]


def test_killed_and_resumed_run_matches_an_uninterrupted_one(setup, tmp_path):
    tmp, root, preset = setup
    torch.set_num_threads(1)
    straight = tmp_path / "straight"
    assert cli(train_argv(preset, root, straight, *FLAGS)) == 0
    expected = _losses(straight)
    assert [s for s, _, _ in expected] == list(range(1, MAX_ITERS + 1))

    run = tmp_path / "killed"
    _kill_after(train_argv(preset, root, run, *FLAGS), run, step=7)
    logged = [s for s, _, _ in _losses(run)]
    saved = sorted(int(re.search(r"\d+", p.name).group()) for p in (run / "checkpoints").glob("step-*"))
    assert logged[-1] < MAX_ITERS and saved and saved[-1] < logged[-1]  # steps after the checkpoint redone
    # what a kill during a save and during a log write leave behind
    (run / "checkpoints" / ".step-0000008.tmp").mkdir()
    (run / "checkpoints" / ".step-0000008.tmp" / "model.safetensors").write_bytes(b"")
    (run / ".eval.json.tmp-12345").write_bytes(b"")
    with (run / "log.jsonl").open("a") as f:
        f.write('{"step": 7, "lo')

    assert cli(train_argv(preset, root, run, *FLAGS)) == 0
    got = _losses(run)
    assert [s for s, _, _ in got] == list(range(1, MAX_ITERS + 1))  # each step logged once
    for (step, loss, lr), (_, want_loss, want_lr) in zip(got, expected, strict=True):
        assert lr == want_lr, step
        assert loss == pytest.approx(want_loss, rel=1e-5, abs=1e-7), f"step {step}"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not (run / ".eval.json.tmp-12345").exists()

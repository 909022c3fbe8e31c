"""``dense-train`` on two CPU processes (torchrun + gloo) is the one-process training of the same global batch.

- ``SyncBatchNorm2d`` on two processes gives the outputs, running statistics and gradients of
  ``BatchNorm2d`` on the whole batch, plain and folded into the head's 1x1 conv (``batch_norm_conv1x1``).
- Two processes at batch 2 log the per-step losses of one process at batch 4 (SyncBN, mean loss).
- A two-process run SIGKILLed mid-run resumes to the uninterrupted two-process losses, step by step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _dense_helpers import log_records, preset_file, train_argv
from torch import nn

from llava_vitsplit.cli import main as cli
from llava_vitsplit.dense.heads import batch_norm_conv1x1
from llava_vitsplit.dense.sync_batchnorm import SyncBatchNorm2d, convert_sync_batchnorm
from llava_vitsplit.testing.dense_synthetic import make_segmentation_set, tiny_preset
from llava_vitsplit.train.launch_env import free_port

pytestmark = pytest.mark.e2e

MAX_ITERS = 10
FLAGS = ("--max-iters", str(MAX_ITERS), "--log-interval", "1", "--save-interval", "4", "--val-split", "")


def _loss_weights() -> torch.Tensor:
    return torch.randn(4, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _sync_rank(rank: int, world: int, init_file: str, results: dict) -> None:
    """Rank ``rank`` of ``world`` runs its half of a batch through a synced norm, plain and folded."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64)  # [B, C, h, w], the global batch
    norm = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(6).double()))[0]
    conv = nn.Conv2d(6, 3, kernel_size=1).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-0.5, 0.5)
    part = x[2 * rank : 2 * rank + 2].clone().requires_grad_(True)
    out = {}
    for name, forward in (
        ("plain", lambda t: conv(norm(t))),
        ("folded", lambda t: batch_norm_conv1x1(t, norm, conv)),
    ):
        part.grad = None
        for p in (*norm.parameters(), *conv.parameters()):
            p.grad = None
        y = forward(part)
        (y * _loss_weights()[2 * rank : 2 * rank + 2]).sum().backward()
        grads = [p.grad.clone() for p in norm.parameters()]
        for g in grads:
            dist.all_reduce(g)  # the weight gradients are per-process sums
        out[name] = (
            y.detach(),
            part.grad.clone(),
            grads,
            norm.running_mean.clone(),
            norm.running_var.clone(),
        )
    results[rank] = out
    dist.destroy_process_group()


def test_sync_batchnorm_on_two_processes_equals_batchnorm_on_the_whole_batch(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_sync_rank, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64).requires_grad_(True)
    norm, conv = nn.BatchNorm2d(6).double(), nn.Conv2d(6, 3, kernel_size=1).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-0.5, 0.5)
    y = conv(norm(x))
    (y * _loss_weights()).sum().backward()
    for name in ("plain", "folded"):
        ys = torch.cat([results[r][name][0] for r in (0, 1)])
        dx = torch.cat([results[r][name][1] for r in (0, 1)])
        torch.testing.assert_close(ys, y.detach(), msg=name)
        torch.testing.assert_close(dx, x.grad, msg=name)
        torch.testing.assert_close(results[0][name][2], [norm.weight.grad, norm.bias.grad], msg=name)
    # two training forwards (plain, then folded) update the running statistics twice
    norm(x.detach())
    torch.testing.assert_close(results[0]["folded"][3], norm.running_mean)
    torch.testing.assert_close(results[1]["folded"][4], norm.running_var)


def test_one_process_keeps_plain_batchnorm():
    norm = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)))[0]
    assert type(norm) is SyncBatchNorm2d and not dist.is_initialized()
    x = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(
        norm(x), nn.functional.batch_norm(x, None, None, norm.weight, norm.bias, True), rtol=0, atol=0
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dense_processes")
    root = make_segmentation_set(tmp / "data", n_train=14, n_val=0)
    preset = preset_file(tmp, tiny_preset(batch_size=4, crop_size=(48, 48), scale_range=(0.75, 1.25)))
    return tmp, root, preset


def _losses(run: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["lr"]) for r in log_records(run) if "loss" in r]


def _two_processes(argv: list[str], **popen) -> subprocess.Popen:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    command = [*torchrun, str(free_port()), "-m", "llava_vitsplit.cli", *argv, "--cpu", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def _finish(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output.decode()[-3000:]


@pytest.fixture(scope="module")
def two_process_run(setup):
    tmp, root, preset = setup
    run = tmp / "two"
    _finish(_two_processes(train_argv(preset, root, run, *FLAGS, "--num-workers", "1")))
    return run


def test_two_processes_log_the_losses_of_one_process_with_the_same_global_batch(setup, two_process_run):
    tmp, root, preset = setup
    torch.set_num_threads(1)
    assert cli(train_argv(preset, root, tmp / "one", *FLAGS, "--batch-size", "4")) == 0
    one, two = _losses(tmp / "one"), _losses(two_process_run)
    assert [s for s, _, _ in two] == [s for s, _, _ in one] == list(range(1, MAX_ITERS + 1))
    for (step, loss, lr), (_, want, want_lr) in zip(two, one, strict=True):
        assert lr == want_lr and loss == pytest.approx(want, rel=2e-5, abs=1e-6), step


def test_a_killed_two_process_run_resumes_exactly(setup, two_process_run):
    tmp, root, preset = setup
    run = tmp / "killed"
    argv = train_argv(preset, root, run, *FLAGS, "--num-workers", "1")
    proc = _two_processes(argv, start_new_session=True)
    log, deadline = run / "log.jsonl", time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and '"step": 6,' in log.read_text():
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both processes
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert saved and _losses(run)[-1][0] < MAX_ITERS
    _finish(_two_processes(argv))
    got, expected = _losses(run), _losses(two_process_run)
    assert [s for s, _, _ in got] == list(range(1, MAX_ITERS + 1))  # each step logged once
    for (step, loss, lr), (_, want, want_lr) in zip(got, expected, strict=True):
        assert lr == want_lr and loss == pytest.approx(want, rel=1e-5, abs=1e-7), step

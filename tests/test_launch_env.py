"""The quickstart's one training process runs without a distributed wrapper.

With ``RANK``/``WORLD_SIZE`` in the environment accelerate starts a gloo process group of one and the
Trainer wraps the model in DistributedDataParallel, which copies every gradient into its buckets on each
step for nothing to reduce. The quickstart's environment drops those variables, also when the caller has
them set.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llava_vitsplit.quickstart.budget import get_budget
from llava_vitsplit.quickstart.pipeline import Run
from llava_vitsplit.train.launch_env import RANK_VARIABLES, plain_process_env, single_process_env

DISTRIBUTED_TYPE = "from accelerate import PartialState; print(PartialState(cpu=True).distributed_type.name)"


def distributed_type(env: dict[str, str]) -> str:
    """What accelerate (as the Trainer starts it) makes of ``env``: ``NO`` for one plain process."""
    out = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED_TYPE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_the_quickstarts_training_process_is_not_wrapped_for_distributed_training(
    tmp_path: Path, monkeypatch
):
    caller = single_process_env()  # e.g. the quickstart started from inside a launcher
    for name, value in caller.items():
        monkeypatch.setenv(name, value)
    assert distributed_type(caller | {"PATH": "/usr/bin:/bin"}) == "MULTI_CPU"  # what the Trainer would wrap

    run = Run(tmp_path / "run", get_budget("smoke"), repo=Path(__file__).resolve().parents[1])
    for stage in ("pretrain", "finetune"):
        env = run._train_env(stage)
        assert not set(RANK_VARIABLES) & set(env), stage
        assert env["LAUNCHER"] == f"{sys.executable} -m"
    assert distributed_type(run._train_env("finetune")) == "NO"


def test_plain_process_env_keeps_everything_but_the_rank_layout():
    caller = {"PATH": "/bin", "OMP_NUM_THREADS": "2", "RANK": "3", "WORLD_SIZE": "8", "MASTER_PORT": "1"}
    env = plain_process_env(caller)
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "2", "LAUNCHER": f"{sys.executable} -m"}
    assert caller["RANK"] == "3"  # the caller's mapping is left as it was

"""Every environment variable the README promises for the three stage scripts reaches the trainer's
command line (read with ``LAUNCHER=echo``: the script prints the command it would run)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("pretrain.sh", "finetune.sh", "finetune_lora.sh")
STAGE2_ONLY = {"PRETRAIN_DIR"}


def promised_variables() -> set[str]:
    """The names in the README's "Every path and size is an environment variable (...)" list."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Every path and size is an environment variable \((.*?)\); gradient", text, re.S)
    assert match, "README training section lost its list of script variables"
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", match.group(1)))


def script_command(script: str, **env: str) -> list[str]:
    """The trainer arguments ``scripts/<script>`` would launch with ``env`` (the others unset)."""
    unset = promised_variables() | {"GRAD_ACCUM", "TRAIN_RECIPE"}
    base = {k: v for k, v in os.environ.items() if k not in unset}
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / script)],
        env={**base, "LAUNCHER": "echo", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    argv = shlex.split(out)
    assert argv[0] == "llava_vitsplit.train", out
    return argv[1:]


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_passes_every_promised_variable(script):
    expected = promised_variables() - (STAGE2_ONLY if script == "pretrain.sh" else set())
    values = {name: f"value-of-{name.lower()}" for name in expected}
    argv = script_command(script, **values)
    missing = sorted(name for name, value in values.items() if value not in argv)
    assert not missing, f"scripts/{script} ignores {missing}"

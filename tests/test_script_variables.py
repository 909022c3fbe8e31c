"""Every environment variable the README promises for all three stage scripts is read by each of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("pretrain.sh", "finetune.sh", "finetune_lora.sh")
LORA_ONLY = {"LORA_R", "LORA_ALPHA", "MM_PROJECTOR_LR"}
STAGE2_ONLY = {"PRETRAIN_DIR"}


def promised_variables() -> set[str]:
    """The names in the README's "Every path and size is an environment variable (...)" list."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Every path and size is an environment variable \((.*?)\); gradient", text, re.S)
    assert match, "README training section lost its list of script variables"
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", match.group(1)))


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_reads_every_promised_variable(script):
    body = (ROOT / "scripts" / script).read_text(encoding="utf-8")
    expected = promised_variables() - LORA_ONLY
    if script == "pretrain.sh":
        expected -= STAGE2_ONLY
    if script == "finetune_lora.sh":
        expected |= LORA_ONLY
    missing = {name for name in expected if not re.search(rf"\$\{{{name}[:}}-]", body)}
    assert not missing, f"scripts/{script} ignores {sorted(missing)}"

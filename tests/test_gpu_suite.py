"""``bench/gpu_suite.sh`` in its tiny mode on the CPU: every section runs and the JSON + markdown are complete."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("connector", "stage1", "stage2", "dense", "deform_conv")


def test_tiny_gpu_suite_writes_every_section(tmp_path):
    out = tmp_path / "suite"
    env = {**os.environ, "TINY": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_suite.sh"), str(out)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    assert report["tiny"] and report["device"] == "cpu" and report["dtype"] in ("fp32", "bf16")
    assert list(report["sections"]) == list(SECTIONS)
    for name, section in report["sections"].items():
        assert section["status"] == "ok", (name, section.get("error"))
    sections = report["sections"]
    assert {r["preset"] for r in sections["connector"]["results"]} == {"llava-v1.5-7b", "llava-v1.5-7b-mlp"}
    for stage, name in (("pretrain", "stage1"), ("finetune", "stage2")):
        for r in sections[name]["results"].values():
            assert r["stage"] == stage and r["median_s"] > 0 and r["tokens_per_s"] > 0
            assert 0 < r["connector_share"] and r["gflops_per_step"] > 0
            assert r["mfu"] is None  # no GPU peak on a CPU
    dense = sections["dense"]["results"]
    assert set(dense) == {"vitsplit", "full_finetune_linear"}
    for r in dense.values():
        assert r["trainable_params"] > 0 and r["median_s"] > 0 and r["train_rss_increase_mib"] > 0
    impls = {(r["impl"], r["dtype"]): r["compute_dtype"] for r in sections["deform_conv"]["results"]}
    assert impls[("sampled", "bf16")] == "bfloat16" and impls[("torchvision", "bf16")] == "float32"
    markdown = (out / "gpu_suite.md").read_text()
    for name in SECTIONS:
        assert f"## {name}: ok" in markdown
    assert sum(line.startswith("|---") for line in markdown.splitlines()) == len(SECTIONS)
    assert "connector share" in markdown and "per-round speed vs full" in markdown

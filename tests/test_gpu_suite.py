"""``bench/gpu_suite.sh`` in its tiny mode on the CPU: every section runs and the JSON + markdown are complete.

The serving sections run their transformers half here (``.venv`` has no vLLM); their vLLM half is skipped
and says so in the report. vLLM itself is covered by ``make test-vllm`` and by the GPU run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("connector", "stage1", "stage2", "stage2_packed", "dense", "deform_conv", "serving_checkpoint",
            "serving_long", "serving_server")  # fmt: skip


@pytest.mark.e2e
def test_tiny_gpu_suite_writes_every_section(tmp_path):
    out = tmp_path / "suite"
    env = {**os.environ, "TINY": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        # the GPU run's 480 s budget is no limit for this check of the suite on a loaded 2-core box
        ["bash", str(ROOT / "bench" / "gpu_suite.sh"), str(out), "--budget", "1800"],
        env=env,
        capture_output=True,
        text=True,
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
    padded, packed = sections["stage2_packed"]["results"].values()
    assert (padded["layout"], packed["layout"]) == ("padded", "packed") and padded["rows"] == 4 > packed[
        "rows"
    ]
    assert packed["tokens_per_step"] == padded["tokens_per_step"]  # the same samples, padding not counted
    assert (
        packed["pad_fraction"] < padded["pad_fraction"]
        and packed["gflops_per_step"] < padded["gflops_per_step"]
    )
    dense = sections["dense"]["results"]
    assert set(dense) == {"vitsplit", "full_finetune_linear"}
    for r in dense.values():
        assert r["trainable_params"] > 0 and r["median_s"] > 0 and r["train_rss_increase_mib"] > 0
    impls = {(r["impl"], r["dtype"]): r["compute_dtype"] for r in sections["deform_conv"]["results"]}
    assert impls[("sampled", "bf16")] == "bfloat16" and impls[("torchvision", "bf16")] == "float32"
    assert_serving_sections(sections, report["vllm_python"])
    markdown = (out / "gpu_suite.md").read_text()
    for name in SECTIONS:
        assert f"## {name}: ok" in markdown
    assert sum(line.startswith("|---") for line in markdown.splitlines()) == len(SECTIONS)
    assert "connector share" in markdown and "per-round speed vs full" in markdown
    assert markdown.count("vLLM half skipped: no vLLM python") == 2


def assert_serving_sections(sections: dict, vllm_python: str) -> None:
    """Workloads (b) and (c) ran on the built checkpoint, transformers only, every reply forced to 8 tokens."""
    built = sections["serving_checkpoint"]["results"]
    assert built["preset"] == "tiny" and built["params"] > 0 and built["images"] == 2
    assert (Path(built["checkpoint"]) / "model.safetensors").is_file()
    assert vllm_python.startswith("no vLLM python")
    long, server = sections["serving_long"]["results"], sections["serving_server"]["results"]
    for results in (long, server):
        assert results["engines"] == ["transformers"] and results["new_tokens"] == 8
        assert results["model"] == built["checkpoint"]
    (row,) = long["rows"]
    assert row["engine"] == "transformers" and row["output_tokens"] == 2 * 8
    assert row["startup"]["seconds"] > 0 and row["output_tokens_per_s"] > 0
    assert [(r["engine"], r["clients"], r["requests"]) for r in server["rows"]] == [
        ("transformers (demo engine)", 1, 2),
        ("transformers (demo engine)", 2, 2),
    ]
    for r in server["rows"]:
        assert r["requests_per_s"] > 0 and 0 < r["ttft_s"]["p50"] <= r["ttft_s"]["p95"]
        assert 0 < r["itl_ms"]["p50"] <= r["itl_ms"]["p95"]


@pytest.mark.parametrize("vllm", [True, False])
def test_gpu_serving_sections_run_7b_long_answers_with_or_without_vllm(tmp_path, vllm):
    """On a GPU: the 7B random checkpoint in bf16, 256 forced tokens, 16 replies, 1/4/16 clients."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_suite import serving_sections

    runs = serving_sections(False, "cuda", tmp_path, vllm)
    assert list(runs) == ["serving_checkpoint", "serving_long", "serving_server"]
    build = runs["serving_checkpoint"]
    assert build[build.index("--preset") + 1] == "llava-v1.5-7b" and "--tiny" not in build
    for name in ("serving_long", "serving_server"):
        argv = runs[name]
        assert argv[argv.index("--model") + 1] == str(tmp_path / "checkpoint")
        assert argv[argv.index("--dtype") + 1] == "bf16" and argv[argv.index("--new-tokens") + 1] == "256"
        assert "--enforce-eager" not in argv and ("vllm" in argv) == vllm
    long, server = runs["serving_long"], runs["serving_server"]
    assert long[long.index("--images") + 1] == "16" and long[long.index("--batch-size") + 1] == "16"
    assert server[server.index("--clients") + 1 : server.index("--clients") + 4] == ["1", "4", "16"]

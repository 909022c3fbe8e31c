"""``eval/``: the benchmark scripts' guards and the results -> paper Table 4 markdown collector."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EVAL_DIR = Path(__file__).resolve().parents[1] / "eval"
BENCHMARK_SCRIPTS = ["vqav2", "vizwiz", "sqa", "pope", "mmbench", "llava_wild", "mmvet"]


def load_collector():
    spec = importlib.util.spec_from_file_location("collect_results", EVAL_DIR / "collect_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_results(path: Path, date: str, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"date": date, "results": results}))


@pytest.mark.parametrize("name", [*BENCHMARK_SCRIPTS, "all", "_common"])
def test_scripts_parse(name):
    subprocess.run(["bash", "-n", str(EVAL_DIR / f"{name}.sh")], check=True)


def test_script_refuses_a_folder_without_checkpoint(tmp_path):
    result = subprocess.run(
        ["bash", str(EVAL_DIR / "pope.sh"), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "no config.json" in result.stderr


def test_judge_scripts_require_an_api_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    (tmp_path / "config.json").write_text("{}")
    for name in ("llava_wild", "mmvet"):
        result = subprocess.run(
            ["bash", str(EVAL_DIR / f"{name}.sh"), str(tmp_path)], capture_output=True, text=True, env=env
        )
        assert result.returncode != 0 and "OPENAI_API_KEY" in result.stderr


def test_collect_results_builds_table_with_paper_numbers(tmp_path, capsys):
    collector = load_collector()
    write_results(
        tmp_path / "a" / "old_results.json", "20250101_000000", {"pope_random": {"pope_f1_score,none": 0.5}}
    )
    write_results(
        tmp_path / "b" / "new_results.json",
        "20250102_000000",
        {
            "pope_random": {"pope_f1_score,none": 0.8853},
            "pope_adv": {"pope_f1_score,none": 0.861},
            "scienceqa_img": {"exact_match,none": 0.704},
            "vqav2_test": {"submission,none": None},
            "vizwiz_vqa_val": {"exact_match,none": 0.52},
            "mmvet": {"gpt_eval_score,none": 31.2},
        },
    )
    out = tmp_path / "table.md"
    assert collector.main([str(tmp_path), "--output", str(out)]) == 0
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in out.read_text().splitlines()
        if line.startswith("| ") and "---" not in line
    }
    assert rows["POPE random (F1)"] == ["pope_random", "88.5", "87.3", "88.5"]  # newest file wins
    assert rows["POPE adversarial (F1)"][1] == "86.1"
    assert rows["ScienceQA-IMG"][1:] == ["70.4", "66.8", "70.4"]
    assert rows["MM-Vet"][1] == "31.2"
    assert rows["VQAv2 (test-dev)"][1].startswith("test server")
    assert rows["VizWiz (test-dev)"][1] == "52.0 (val, not test-dev)"
    assert rows["LLaVA-in-the-Wild"][1] == "not run"
    assert out.read_text() in capsys.readouterr().out


def test_collect_results_names_bad_input(tmp_path, capsys):
    collector = load_collector()
    (tmp_path / "x_results.json").write_text("{not json")
    assert collector.main([str(tmp_path)]) == 2
    assert "x_results.json" in capsys.readouterr().err
    assert collector.main([str(tmp_path / "missing")]) == 2

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


FUNCTIONS = {  # built-in task name -> its process_results, as lmms-eval logs it in "configs"
    "pope_random": ("pope_process_results", "random"),
    "pope_adv": ("pope_process_results", "adversarial"),
    "scienceqa_img": ("sqa_process_results", "test"),
    "vqav2_test": ("vqav2_process_results_test", "test"),
    "vizwiz_vqa_val": ("vizwiz_vqa_process_results", "val"),
    "mmvet": ("mmvet_process_results", "test"),
    "mmbench_en_dev": ("mmbench_process_results", "dev"),
    "llava_in_the_wild": ("llava_process_results", "train"),
}


def config(task: str, function: str | None = None, split: str | None = None) -> dict:
    function, default_split = (function, split) if function else FUNCTIONS[task]
    return {
        "task": task,
        "test_split": split or default_split,
        "process_results": f"<function {function} at 0x7f00>",
    }


def write_results(path: Path, date: str, results: dict, configs: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    configs = configs or {task: config(task) for task in results}
    path.write_text(json.dumps({"date": date, "results": results, "configs": configs}))


def write_samples(results_file: Path, task: str, samples: list[dict]) -> None:
    stem = results_file.name.removesuffix("_results.json")
    path = results_file.with_name(f"{stem}_samples_{task}.jsonl")
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))


def table_rows(text: str) -> dict[str, list[str]]:
    return {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
    }


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
        assert result.returncode != 0 and "OPENAI_API_KEY" in result.stderr and "JUDGE=none" in result.stderr


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
    rows = table_rows(out.read_text())
    assert rows["POPE random (F1)"][:2] == ["pope_random", "88.5"]  # newest file wins
    assert rows["POPE random (F1)"][3:] == ["87.3", "88.5"]
    assert rows["POPE adversarial (F1)"][1] == "86.1"
    assert rows["ScienceQA-IMG"][1] == "70.4" and rows["ScienceQA-IMG"][3:] == ["66.8", "70.4"]
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


def test_mmbench_detail_file_is_a_submission_not_a_results_file(tmp_path, capsys):
    collector = load_collector()
    results = tmp_path / "model" / "20250101_000000_results.json"
    write_results(results, "20250101_000000", {"mmbench_en_dev": {"gpt_eval_score,none": 64.3}})
    detail = tmp_path / "submissions" / "mmbench_en_dev_results.json"
    detail.parent.mkdir()
    detail.write_text(json.dumps({"overall_acc": 0.643, "category_acc": {}, "l2_category_acc": {}}))
    assert collector.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert table_rows(text)["MMBench-EN (dev)"][1] == "64.3"
    assert f"- `{detail}`" in text and str(results) in text.split("Results files:")[1].split("\n")[0]


def test_renamed_local_tasks_map_to_their_benchmark(tmp_path, capsys):
    collector = load_collector()
    results = tmp_path / "20250101_000000_results.json"
    configs = {
        "my_pope_adv": config("my_pope_adv", "pope_process_results", "test"),
        "my_sqa": config("my_sqa", "sqa_process_results", "test"),
        "my_caption_task": config("my_caption_task", "caption_process_results", "test"),
    }
    metrics = {"my_pope_adv": {"pope_f1_score,none": 0.5}, "my_sqa": {"exact_match,none": 0.25}}
    write_results(results, "20250101_000000", {**metrics, "my_caption_task": {"cider,none": 1.0}}, configs)
    assert collector.main([str(results)]) == 0
    text = capsys.readouterr().out
    rows = table_rows(text)
    assert rows["POPE adversarial (F1)"][:2] == ["my_pope_adv", "50.0"]
    assert rows["ScienceQA-IMG"][:2] == ["my_sqa", "25.0"]
    assert rows["POPE random (F1)"][1] == "not run"
    assert "Not paper benchmarks (not in the table): my_caption_task" in text


def pope_sample(answer: str, target: str) -> dict:
    return {"doc_id": 0, "target": target, "filtered_resps": [answer]}


def test_pope_paper_figure_uses_llava_parsing_and_the_predictions_yes_ratio(tmp_path, capsys):
    collector = load_collector()
    results = tmp_path / "20250101_000000_results.json"
    # lmms-eval's yes-ratio is the ground truth's (2 of 4); LLaVA's is the predictions' (3 of 4)
    write_results(
        results, "20250101_000000", {"pope_random": {"pope_f1_score,none": 0.4, "pope_yes_ratio,none": 0.5}}
    )
    answers = [("Yes, there is a dog.", "yes"), ("No.", "no"), ("There is a cat", "no"), ("yes", "yes")]
    write_samples(results, "pope_random", [pope_sample(a, t) for a, t in answers])
    assert collector.main([str(tmp_path)]) == 0
    # LLaVA: predictions yes, no, yes, yes -> TP 2, FP 1, FN 0: F1 = 0.8
    assert table_rows(capsys.readouterr().out)["POPE random (F1)"][1:3] == ["40.0", "80.0 (yes-ratio 75.0%)"]


def mmbench_sample(index: int, answer: str, prediction: str) -> dict:
    record = {"index": index, "answer": answer, "prediction": prediction, "A": "cat", "B": "dog", "C": None}
    return {"doc_id": index, "gpt_eval_score": record}


def test_mmbench_paper_figure_is_circular_and_never_guesses():
    from llava_vitsplit.lmms_eval_plugin.paper_scores import mmbench_scores

    # question 0: both rotations right; question 1: right first, wrong rotated; question 2: right
    samples = [
        mmbench_sample(0, "A", "A"),
        mmbench_sample(1_000_000, "B", "B."),
        mmbench_sample(1, "A", "A"),
        mmbench_sample(1_000_001, "B", "A"),
        mmbench_sample(2, "B", "The answer is dog"),
    ]
    scores = mmbench_scores(samples)
    assert (scores.circular, scores.single_pass, scores.questions, scores.need_judge) == (2 / 3, 1.0, 3, 0)
    unmatched = mmbench_scores([*samples, mmbench_sample(3, "A", "I am not sure")])
    assert unmatched.circular is None and unmatched.need_judge == 1


@pytest.mark.parametrize(
    ("task", "record", "failed"),
    [
        ("llava_in_the_wild", {"scores": [-1, -1], "eval_model": "Failed Request"}, True),
        ("llava_in_the_wild", {"scores": [8, 7], "eval_model": "gpt-4o-mini"}, False),
        ("mmvet", {"score": 0.0, "eval_model": ""}, True),
        ("mmvet", {"score": 0.5, "eval_model": "gpt-4-0613"}, False),
    ],
)
def test_a_failed_judge_is_an_error_not_a_score(tmp_path, capsys, task, record, failed):
    collector = load_collector()
    results = tmp_path / "20250101_000000_results.json"
    metric = "gpt_eval_llava_all" if task == "llava_in_the_wild" else "gpt_eval_score"
    write_results(results, "20250101_000000", {task: {f"{metric},none": 100.0}})  # all-failed LLaVA-W: 100
    ok = (
        {**record, "scores": [8, 7], "eval_model": "gpt"}
        if task == "llava_in_the_wild"
        else {"eval_model": "gpt"}
    )
    write_samples(results, task, [{"doc_id": 0, metric: ok}, {"doc_id": 1, metric: record}])
    assert collector.main([str(tmp_path)]) == (1 if failed else 0)
    captured = capsys.readouterr()
    label = "LLaVA-in-the-Wild" if task == "llava_in_the_wild" else "MM-Vet"
    paper = table_rows(captured.out)[label][2]
    assert paper == ("ERROR: judge failed on 1 of 2" if failed else "= lmms-eval")
    assert ("judge calls failed" in captured.err) is failed


def test_predict_only_runs_show_not_scored(tmp_path, capsys):
    collector = load_collector()
    results = tmp_path / "20250101_000000_results.json"
    write_results(results, "20250101_000000", {"mmvet": {"bypass,none": 999, "bypass_stderr,none": "N/A"}})
    assert collector.main([str(tmp_path)]) == 0
    assert table_rows(capsys.readouterr().out)["MM-Vet"][1] == "not scored (--judge none)"


def test_judge_must_be_gpt_or_none(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["JUDGE"] = "bogus"
    (tmp_path / "config.json").write_text("{}")
    result = subprocess.run(
        ["bash", str(EVAL_DIR / "mmvet.sh"), str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2 and "JUDGE must be gpt or none" in result.stderr

"""The shortened quickstart: every step of ``make quickstart`` on a handful of samples.

Real assets (recovered and numerically checked, shared with test_assets.py), easy-vqa conversion, the real
``scripts/pretrain.sh`` and ``scripts/finetune.sh`` (one CPU process, plain PyTorch), lmms-eval with the
``llava_vitsplit`` model on the local easy-vqa task, the report with the model's answers; then a re-run
that skips every finished step.
"""

from __future__ import annotations

import json

import pytest
from _quickstart_assets import recovered_root, require_asset_packages

from llava_vitsplit.assets import ASSETS
from llava_vitsplit.quickstart.budget import get_budget
from llava_vitsplit.quickstart.easy_vqa_task import TASK_NAME
from llava_vitsplit.quickstart.report import model_answer, read_eval
from llava_vitsplit.util.cpu_precision import cpu_precision


def test_budget_names_and_image_size_are_checked():
    assert get_budget("smoke", pretrain_steps=3).pretrain_steps == 3
    with pytest.raises(KeyError, match="valid: default, smoke"):
        get_budget("huge")
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        get_budget("default", image_size=100)


def test_command_line_overrides_the_budget():
    from llava_vitsplit.quickstart.cli import budget_from_args, build_parser

    default = budget_from_args(build_parser().parse_args([]))
    assert default == get_budget("default") and not default.balanced_yes_no
    changed = budget_from_args(build_parser().parse_args(["--balance-yes-no", "--finetune-steps", "3"]))
    assert changed.balanced_yes_no and changed.finetune_steps == 3
    assert changed.pretrain_steps == default.pretrain_steps


@pytest.mark.e2e
def test_shortened_quickstart_runs_every_step_and_resumes(tmp_path, capsys):
    pytest.importorskip("easy_vqa")
    pytest.importorskip("lmms_eval")
    require_asset_packages()
    from llava_vitsplit.cli import main

    root = recovered_root()
    out, data = tmp_path / "run", tmp_path / "data"
    argv = [
        "quickstart",
        "--budget",
        "smoke",
        "--out",
        str(out),
        "--data-dir",
        str(data),
        "--models-root",
        str(root),
        "--vision-tower",
        str(root / ASSETS["dinov2-small"].folder),
        "--language-model",
        str(root / ASSETS["smollm2-135m-instruct"].folder),
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "easy-vqa test accuracy:" in report and "make demo" in report

    # stage 1 wrote the connector, stage 2 a full checkpoint with its processor at the quickstart size
    assert (out / "pretrain" / "connector.safetensors").is_file()
    config = json.loads((out / "checkpoint" / "config.json").read_text())
    assert config["model_type"] == "llava_vitsplit" and config["connector_type"] == "vitsplit"
    assert (
        config["vision_config"]["model_type"] == "dinov2" and config["text_config"]["model_type"] == "llama"
    )
    tower_processor = json.loads((out / "vision_tower" / "preprocessor_config.json").read_text())
    assert tower_processor["size"] == {"height": 28, "width": 28} and not tower_processor["do_center_crop"]
    for stage in ("pretrain", "finetune"):
        log = (out / "logs" / f"{stage}.log").read_text()
        assert "--max_steps 2" in log and "--preset quickstart" in log
        assert f"this CPU's choice: {cpu_precision().describe()}" in log  # the training log names it

    # lmms-eval scored the smoke budget's questions and the model answered each one
    result = read_eval(out / "eval", TASK_NAME)
    assert result.num_questions == get_budget("smoke").eval_limit
    assert 0.0 <= result.accuracy <= 100.0 and set(result.by_type) == {"yes/no", "color", "shape"}
    answers = [model_answer(sample) for sample in result.samples]
    assert len(answers) == result.num_questions and all(isinstance(a, str) for a in answers)
    assert any(a.strip() for a in answers)
    for image, question, *_ in _report_examples(report):
        assert image.startswith("test/") and question.endswith("?")

    # a re-run finds every step done and evaluates nothing again
    assert main(argv) == 0
    rerun = capsys.readouterr().out
    for step in ("vision-tower", "pretrain", "finetune", "evaluate"):
        assert f"[quickstart] {step}: done before" in rerun
    assert "cached in" in rerun

    # a stage-2 change redoes stage 2 and the evaluation, and keeps stage 1
    assert main([*argv, "--finetune-steps", "1"]) == 0
    changed = capsys.readouterr().out
    assert "[quickstart] pretrain: done before" in changed
    assert "[quickstart] finetune: done before" not in changed
    assert "--max_steps 1" in (out / "logs" / "finetune.log").read_text()


def _report_examples(report: str) -> list[tuple[str, str]]:
    rows = []
    for line in report.splitlines():
        if line.startswith(("  ok ", "  -- ")):
            image, rest = line[5:].split("  ", 1)
            rows.append((image, rest.split(" -> ")[0]))
    assert rows, report
    return rows


def test_comparison_table_has_one_row_per_variant():
    from llava_vitsplit.quickstart.report import EvalResult, comparison_table

    def result(acc: float) -> EvalResult:
        by_type = {"yes/no": acc, "color": acc / 2, "shape": acc / 3}
        return EvalResult(task="t", accuracy=acc, by_type=by_type, num_questions=300, samples=[])

    table = comparison_table(
        [("vitsplit", result(85.0), (10_672_896, 145_188_480), 2208.0), ("blind", result(42.0), (1, 2), 60.0)]
    ).splitlines()
    assert len(table) == 4 and table[0].count("|") == table[2].count("|") == 10
    assert table[2] == (
        "| vitsplit | 85.0% | 85.0% | 42.5% | 28.3% | 300 | 10,672,896 | 145,188,480 | 36.8 min |"
    )
    assert table[3].startswith("| blind | 42.0% |") and table[3].endswith("| 1 | 2 | 1.0 min |")


def test_a_folder_without_the_stage_scripts_is_refused_before_any_step(tmp_path):
    from llava_vitsplit.cli import main

    out = tmp_path / "run"
    code = main(["quickstart", "--budget", "smoke", "--out", str(out), "--repo", str(tmp_path)])
    assert code == 1
    assert not out.exists()

"""The benchmark table (``lmms_eval_plugin/benchmarks.py``): the one place a benchmark is described.

A benchmark registered here, in one call, is prompted the LLaVA-1.5 way by the model, recognised in the
results of a real lmms-eval run on a local task, rescored from its samples and shown with its paper
figures by ``eval/collect_results.py``; ``eval/all.sh`` runs the scripts the table lists.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

from llava_vitsplit.lmms_eval_plugin import benchmarks
from llava_vitsplit.lmms_eval_plugin.benchmarks import BENCHMARKS, BenchmarkSpec, Row, register_benchmark
from llava_vitsplit.lmms_eval_plugin.paper_scores import response_text
from llava_vitsplit.lmms_eval_plugin.protocols import SHORT_ANSWER, Protocol, with_kwargs

EVAL_DIR = Path(__file__).resolve().parents[1] / "eval"


def test_all_sh_runs_the_scripts_of_the_table_judged_ones_last(capsys):
    assert benchmarks.main(["scripts"]) == 0
    unjudged, judged = capsys.readouterr().out.splitlines()
    assert unjudged.split() == ["vqav2", "vizwiz", "sqa", "pope", "mmbench"]  # the order all.sh had
    assert judged.split() == ["llava_wild", "mmvet"]
    assert all((EVAL_DIR / f"{spec.script}.sh").is_file() for spec in BENCHMARKS.values())
    assert "llava_vitsplit.lmms_eval_plugin.benchmarks scripts" in (EVAL_DIR / "all.sh").read_text()


def test_the_paper_figures_are_written_once():
    figures = {f"{x:.1f}" for _, row in benchmarks.table_rows() for x in (row.llava15, row.vitsplit) if x}
    for path in [*EVAL_DIR.glob("*.sh"), EVAL_DIR / "collect_results.py"]:
        written = figures & set(re.findall(r"\b\d\d\.\d\b", path.read_text()))
        assert not written, f"{path.name} repeats the paper figures {sorted(written)}"


def test_a_claimed_function_or_name_is_refused():
    pope = BENCHMARKS["pope"]
    with pytest.raises(ValueError, match="already registered"):
        register_benchmark(pope)
    with pytest.raises(ValueError, match="overlap 'pope'"):
        register_benchmark(BenchmarkSpec("pope2", "pope2", ("pope_process_results",), ()))


def yes_share(samples: list[dict]) -> str:
    """A stand-in paper protocol: the share of answers that are "yes"."""
    answers = [response_text(sample).strip().lower() for sample in samples]
    return f"{100 * answers.count('yes') / len(answers):.1f}% yes"


TEXTVQA = BenchmarkSpec(  # lmms-eval's built-in TextVQA functions, LLaVA-1.5's short-answer prompt
    name="textvqa",
    script="textvqa",
    functions=("textvqa_process_results", "textvqa_doc_to_text"),
    rows=(Row("TextVQA (val)", "exact_match", 100, 58.2, None),),
    prompt=(
        "textvqa/utils.textvqa_doc_to_text",
        Protocol(with_kwargs({"pre_prompt": "", "post_prompt": SHORT_ANSWER, "ocr": False})),
    ),
    rescore=yes_share,
)


@pytest.fixture
def textvqa_registered(monkeypatch):
    monkeypatch.setattr(benchmarks, "BENCHMARKS", dict(BENCHMARKS))  # the registration ends with the test
    register_benchmark(TEXTVQA)
    monkeypatch.setattr("llava_vitsplit.lmms_eval_plugin.results.BENCHMARKS", benchmarks.BENCHMARKS)


def write_textvqa_task(task_dir: Path) -> None:
    import datasets

    task_dir.mkdir()
    rows = {
        "question_id": ["q0", "q1"],
        "question": ["Is the sign RED?", "Does it say stop?"],
        "answers": [["yes"] * 10, ["no"] * 10],
        "image": [Image.new("RGB", (40, 32), "red"), Image.new("RGB", (48, 32), "blue")],
    }
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(
        task_dir / "tv.parquet"
    )
    m = "lmms_eval.tasks.textvqa.utils"
    (task_dir / "local_textvqa.yaml").write_text(
        "task: local_textvqa\ndataset_path: parquet\ndataset_kwargs:\n  data_files:\n    validation: tv.parquet\n"
        "test_split: validation\noutput_type: generate_until\n"
        "generation_kwargs:\n  until:\n    - 'ASSISTANT:'\n  max_new_tokens: 8\n"
        f"doc_to_visual: !function {m}.textvqa_doc_to_visual\ndoc_to_text: !function {m}.textvqa_doc_to_text\n"
        f"doc_to_target: answer\nprocess_results: !function {m}.textvqa_process_results\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        'lmms_eval_specific_kwargs:\n  default:\n    pre_prompt: ""\n    post_prompt: " Answer:"\n'
    )


def load_collector():
    spec = importlib.util.spec_from_file_location("collect_results", EVAL_DIR / "collect_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
def test_a_benchmark_registered_in_one_place_is_prompted_scored_and_tabled(
    textvqa_registered, yes_checkpoint, tmp_path, monkeypatch
):
    from lmms_eval.__main__ import cli_evaluate
    from lmms_eval.tasks.textvqa.utils import textvqa_doc_to_text

    from llava_vitsplit.lmms_eval_plugin.prompts import llava15_generation, llava15_text

    task = type(
        "Task", (), {"config": type("Config", (), {"doc_to_text": staticmethod(textvqa_doc_to_text)})}
    )()
    doc = {"question": "what does it say?"}
    assert llava15_text(task, doc) == "What does it say?" + SHORT_ANSWER  # not the task's " Answer:"
    assert llava15_generation(task, {"until": ["ASSISTANT:"]})["until"] == []  # EOS only, as LLaVA-1.5

    task_dir, out = tmp_path / "tasks", tmp_path / "out"
    write_textvqa_task(task_dir)
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    argv = [
        "lmms_eval",
        "--model",
        "llava_vitsplit",
        "--model_args",
        f"pretrained={yes_checkpoint},dtype=auto",
    ]
    argv += ["--tasks", "local_textvqa", "--include_path", str(task_dir), "--output_path", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--batch_size", "1", "--log_samples"])
    cli_evaluate()  # in this process, so the model sees the registration

    collector = load_collector()
    assert collector.main([str(out), "--output", str(tmp_path / "table.md")]) == 0
    lines = [line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| ")]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in lines}
    cells = [cell.strip() for cell in rows["TextVQA (val)"]]
    assert cells == ["local_textvqa", "50.0", "100.0% yes", "58.2", ""]  # "yes" is right on one of two
    results = json.loads(next(out.rglob("*_results.json")).read_text())
    assert results["results"]["local_textvqa"]["exact_match,none"] == pytest.approx(0.5)

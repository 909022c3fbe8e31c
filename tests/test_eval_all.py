"""``eval/all.sh`` end to end: all seven paper benchmarks as local lmms-eval tasks (built-in functions, hub
schemas, renamed tasks, 2-3 docs each) through the real lmms-eval CLI with a tiny checkpoint that always
answers "yes", ``--judge none`` for the GPT-judged ones, then the Table 4 collector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

pytest.importorskip("lmms_eval")

EVAL_DIR = Path(__file__).resolve().parents[1] / "eval"
COLOURS = ["red", "blue", "green"]
IMAGES = [Image.new("RGB", (40 + 8 * i, 32), c) for i, c in enumerate(COLOURS)]
NO_STOP = "generation_kwargs:\n  max_new_tokens: 8\n  temperature: 0\n  do_sample: false\n"


def mmbench_rows(split: str) -> dict:
    # question 0 and its circular rotation (index + 1e6), and question 1 with a hint
    return {
        "index": [0, 1_000_000, 1],
        "question": ["Which colour?", "Which colour?", "Which shape?"],
        "hint": [None, None, "A flat picture."],
        "A": ["red", "blue", "square"],
        "B": ["blue", "red", "circle"],
        "C": [None, None, None],
        "D": [None, None, None],
        "answer": ["A", "B", "A"],
        "category": ["colour"] * 3,
        "L2-category": ["perception"] * 3,
        "source": ["local"] * 3,
        "split": [split] * 3,
        "image": IMAGES,
    }


# name -> (parquet columns, lmms-eval utils module, YAML body after dataset/split lines)
TASK_SPECS: dict[str, tuple[dict, str, str]] = {
    "local_vqav2_test": (
        {
            "question_id": [1, 2],
            "question": ["What colour?", "Is it Red?"],
            "answer": ["", ""],
            "image": IMAGES[:2],
        },
        "vqav2.utils",
        "doc_to_visual: !function {m}.vqav2_doc_to_visual\ndoc_to_text: !function {m}.vqav2_doc_to_text\n"
        "doc_to_target: answer\n"
        "process_results: !function {m}.vqav2_process_results_test\n"
        "metric_list:\n  - metric: submission\n    aggregation: !function {m}.vqav2_aggregate_submissions\n"
        "    higher_is_better: true\n",
    ),
    "local_vizwiz_test": (
        {
            "question_id": ["VizWiz_test_1", "VizWiz_test_2"],
            "question": ["Is it a Rose?", "What?"],
            "image": IMAGES[:2],
        },
        "vizwiz_vqa.utils",
        "doc_to_visual: !function {m}.vizwiz_vqa_doc_to_visual\n"
        "doc_to_text: !function {m}.vizwiz_vqa_doc_to_text\ndoc_to_target: answer\n"
        "process_results: !function {m}.vizwiz_vqa_process_results\n"
        "metric_list:\n  - metric: submission\n"
        "    aggregation: !function {m}.vizwiz_vqa_aggregate_submissions\n    higher_is_better: true\n",
    ),
    "local_sqa_img": (
        {
            "question": ["Which word is a colour?", "Which is true?"],
            "hint": ["", "Look closely."],
            "choices": [["yes", "table"], ["no", "yes"]],
            "answer": [0, 1],
            "image": IMAGES[:2],
        },
        "scienceqa.utils",
        "doc_to_visual: !function {m}.sqa_doc_to_visual\ndoc_to_text: !function {m}.sqa_doc_to_text\n"
        "doc_to_target: !function {m}.sqa_doc_to_target\nprocess_results: !function {m}.sqa_process_results\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        'lmms_eval_specific_kwargs:\n  default:\n    format: default\n    pre_prompt: ""\n    post_prompt: ""\n',
    ),
    **{
        f"local_pope_{variant}": (
            {
                "question_id": ["1", "2", "3"],
                "question": ["Is there a square?", "Is there a dog?", "Is there a cat?"],
                "answer": ["yes", "no", "no"],
                "image": IMAGES,
                "category": [variant] * 3,
            },
            "pope.utils",
            "doc_to_visual: !function {m}.pope_doc_to_visual\ndoc_to_text: !function {m}.pope_doc_to_text\n"
            "doc_to_target: answer\nprocess_results: !function {m}.pope_process_results\nmetric_list:\n"
            + "".join(
                f"  - metric: pope_{name}\n    aggregation: !function {{m}}.pope_aggregate_{name}\n"
                "    higher_is_better: true\n"
                for name in ("accuracy", "f1_score", "yes_ratio")
            ),
        )
        for variant in ("random", "pop", "adv")
    },
    "local_mmbench_dev": (
        mmbench_rows("dev"),
        "mmbench.en_utils",
        "doc_to_visual: !function {m}.mmbench_doc_to_visual\ndoc_to_text: !function {m}.mmbench_doc_to_text\n"
        "doc_to_target: answer\nprocess_results: !function {m}.mmbench_process_results\n"
        "metric_list:\n  - metric: gpt_eval_score\n"
        "    aggregation: !function {m}.mmbench_aggregate_dev_results_eval\n    higher_is_better: true\n",
    ),
    "local_mmbench_test": (
        mmbench_rows("test"),
        "mmbench.en_utils",
        "doc_to_visual: !function {m}.mmbench_doc_to_visual\ndoc_to_text: !function {m}.mmbench_doc_to_text\n"
        "doc_to_target: answer\nprocess_results: !function {m}.mmbench_process_results\n"
        "metric_list:\n  - metric: submission\n"
        "    aggregation: !function {m}.mmbench_aggregate_test_results\n    higher_is_better: true\n",
    ),
    "local_llava_wild": (
        {
            "question_id": [0, 1],
            "question": ["Describe the picture.", "What colour is it?"],
            "caption": ["a red square", "a blue square"],
            "gpt_answer": ["A red square.", "Blue."],
            "category": ["detail", "conv"],
            "image": IMAGES[:2],
        },
        "llava-in-the-wild.utils",
        "doc_to_visual: !function {m}.llava_doc_to_visual\ndoc_to_text: !function {m}.llava_doc_to_text\n"
        "doc_to_target: gpt_answer\nprocess_results: !function {m}.llava_process_results\n"
        "metric_list:\n  - metric: gpt_eval_llava_all\n    aggregation: !function {m}.llava_all_aggregation\n"
        "    higher_is_better: true\n",
    ),
    "local_mmvet": (
        {
            "question_id": ["v1_0", "v1_1"],
            "question": ["What is shown?", "Explain the picture."],
            "answer": ["a red square", "a blue square"],
            "capability": ["rec", "rec,gen"],
            "image": IMAGES[:2],
        },
        "mmvet.utils",
        "doc_to_visual: !function {m}.mmvet_doc_to_visual\ndoc_to_text: !function {m}.doc_to_text\n"
        "doc_to_target: answer\nprocess_results: !function {m}.mmvet_process_results\n"
        "metric_list:\n  - metric: gpt_eval_score\n    aggregation: !function {m}.mmvet_aggregate_results\n"
        "    higher_is_better: true\n",
    ),
}


def write_tasks(task_dir: Path) -> None:
    import datasets

    task_dir.mkdir()
    for name, (columns, module, body) in TASK_SPECS.items():
        split = "dev" if name == "local_mmbench_dev" else "test"
        datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image()).to_parquet(
            task_dir / f"{name}.parquet"
        )
        header = (
            f"task: {name}\ndataset_path: parquet\ndataset_kwargs:\n  data_files:\n    {split}: {name}.parquet\n"
            f"test_split: {split}\noutput_type: generate_until\n{NO_STOP}"
        )
        if "lmms_eval_specific_kwargs" not in body:
            header += 'lmms_eval_specific_kwargs:\n  default:\n    pre_prompt: ""\n    post_prompt: ""\n'

        (task_dir / f"{name}.yaml").write_text(header + body.format(m=f"lmms_eval.tasks.{module}"))


def table_rows(text: str) -> dict[str, list[str]]:
    return {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
    }


def test_all_sh_runs_every_benchmark_on_local_tasks(yes_checkpoint, tmp_path):
    task_dir = tmp_path / "tasks"
    write_tasks(task_dir)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "TASKS")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_CACHE=str(tmp_path / "hf_cache"),
        PYTHON=sys.executable,
        OUTPUT=str(out),
        VQAV2_TASKS="local_vqav2_test",
        VIZWIZ_TASKS="local_vizwiz_test",
        SQA_TASKS="local_sqa_img",
        POPE_TASKS="local_pope_random,local_pope_pop,local_pope_adv",
        MMBENCH_DEV_TASKS="local_mmbench_dev",
        MMBENCH_TEST_TASKS="local_mmbench_test",
        LLAVA_WILD_TASKS="local_llava_wild",
        MMVET_TASKS="local_mmvet",
    )
    command = ["bash", str(EVAL_DIR / "all.sh"), str(yes_checkpoint), "--judge", "none"]
    result = subprocess.run(
        [*command, "--include_path", str(task_dir)], capture_output=True, text=True, timeout=900, env=env
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    rows = table_rows((out / "table4.md").read_text())
    assert rows["VQAv2 (test-dev)"][:2] == ["local_vqav2_test", "test server (see submissions/)"]
    assert rows["VizWiz (test-dev)"][:2] == ["local_vizwiz_test", "test server (see submissions/)"]
    assert rows["ScienceQA-IMG"][:3] == ["local_sqa_img", "0.0", "0.0"]  # "yes" is no option letter
    # always "yes": F1 of 1 yes + 2 no; LLaVA's yes-ratio is the predictions' (100%), not the truth's
    for label, task in (("random", "random"), ("popular", "pop"), ("adversarial", "adv")):
        assert rows[f"POPE {label} (F1)"][:3] == [f"local_pope_{task}", "50.0", "50.0 (yes-ratio 100.0%)"]
    assert rows["MMBench-EN (dev)"][:2] == ["local_mmbench_dev", "not scored (--judge none)"]
    assert rows["MMBench-EN (test)"][:2] == ["local_mmbench_test", "test server (see submissions/)"]
    assert rows["LLaVA-in-the-Wild"][:2] == ["local_llava_wild", "not scored (--judge none)"]
    assert rows["MM-Vet"][:2] == ["local_mmvet", "not scored (--judge none)"]
    assert "--judge none: answers are logged, not scored" in result.stderr
    uploads = {p.name for p in (out / "submissions").iterdir()}
    assert "mmbench_en_test_results.xlsx" in uploads
    assert any(n.startswith("vqav2-test-submission-") for n in uploads)
    assert any(n.startswith("vizwiz_vqa-test-submission-") for n in uploads)
    mmvet = [
        json.loads(x) for f in out.rglob("*_samples_local_mmvet.jsonl") for x in f.read_text().splitlines()
    ]
    assert [s["filtered_resps"] for s in mmvet] in (["yes", "yes"], [["yes"], ["yes"]])

"""The ``llava_vitsplit`` lmms-eval model: registration, LLaVA-1.5 prompts, generation knobs, and the
real ``lmms-eval`` CLI run offline on a tiny local POPE-format task (parquet with images)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("lmms_eval")
from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.tasks.pope.utils import pope_doc_to_text  # noqa: E402

from llava_vitsplit.lmms_eval_plugin.prompts import (  # noqa: E402
    MULTIPLE_CHOICE,
    SHORT_ANSWER,
    function_key,
    llava15_text,
)

COLOURS = ["red", "blue", "green", "white"]
EVAL_DIR = Path(__file__).resolve().parents[1] / "eval"


class FakeTask:
    """Stands in for an lmms-eval Task: owns ``config.doc_to_text`` and a bound ``doc_to_visual``."""

    def __init__(self, doc_to_text):
        self.config = type(
            "Config", (), {"doc_to_text": staticmethod(doc_to_text), "doc_to_messages": None}
        )()

    def doc_to_visual(self, doc):
        return [doc["image"]]


def test_entry_point_registers_chat_and_simple_classes():
    from lmms_eval.models import get_model

    from llava_vitsplit.lmms_eval_plugin.model import LlavaViTSplit, LlavaViTSplitChat

    assert get_model("llava_vitsplit") is LlavaViTSplitChat
    assert get_model("llava_vitsplit", force_simple=True) is LlavaViTSplit


def test_llava15_prompts_replace_task_defaults(monkeypatch):
    # these task modules build an (unused) OpenAI judge client at import time, which wants a key
    monkeypatch.setenv("OPENAI_API_KEY", "unused-in-this-test")
    from lmms_eval.tasks.mmbench.en_utils import mmbench_doc_to_text
    from lmms_eval.tasks.mmvet.utils import doc_to_text as mmvet_doc_to_text

    assert function_key(pope_doc_to_text) == "pope/utils.pope_doc_to_text"
    question = {"question": "What is shown?"}
    assert llava15_text(FakeTask(mmvet_doc_to_text), question) == "What is shown?"  # no CoT preamble
    mmbench_doc = {
        "question": "Which?",
        "hint": "nan",
        "A": "cat",
        "B": "dog",
        "category": "c",
        "answer": "A",
        "L2-category": "l2",
        "index": 0,
        "source": "s",
        "split": "dev",
    }
    text = llava15_text(FakeTask(mmbench_doc_to_text), mmbench_doc)
    assert text.endswith("\n" + MULTIPLE_CHOICE.lstrip("\n")) and "\n\n" not in text
    assert llava15_text(FakeTask(lambda doc, kwargs: "custom"), question) is None


@pytest.fixture(scope="module")
def simple_model(yes_checkpoint):
    from llava_vitsplit.lmms_eval_plugin.model import LlavaViTSplit

    model = LlavaViTSplit(pretrained=str(yes_checkpoint), device="cpu", batch_size="2")
    docs = [
        {"question": f"Is there a {c} square?", "image": Image.new("RGB", (40 + 9 * i, 32), c)}
        for i, c in enumerate(COLOURS)
    ]
    model.task_dict = {"tiny": {"test": docs}}
    return model


def request(doc_id: int, gen_kwargs: dict, context: str = "ignored context") -> Instance:
    # a task LLaVA-1.5 did not evaluate keeps its own generation settings (paper tasks: no stop string)
    task = FakeTask(lambda doc, kwargs: doc["question"])
    return Instance(
        "generate_until",
        (context, gen_kwargs, task.doc_to_visual, doc_id, "tiny", "test"),
        0,
        metadata={"task": "tiny", "doc_id": doc_id, "repeats": 1},
    )


def test_simple_model_uses_llava15_prompt(simple_model):
    task = FakeTask(pope_doc_to_text)
    prompt, images = simple_model._simple_item("task prompt", task.doc_to_visual, 1, "tiny", "test")
    assert len(images) == 1 and prompt.count("<image>") == 1
    assert prompt.index("<image>") < prompt.index("Is there a blue square?" + SHORT_ANSWER)
    assert "task prompt" not in prompt


def test_generate_until_honours_until_max_new_tokens_and_order(simple_model):
    requests = [
        request(0, {"max_new_tokens": 8}),
        request(1, {"until": ["s"], "max_new_tokens": 8}),
        request(2, {"max_new_tokens": 8}, context="a much longer context than the others"),
        request(3, {"max_new_tokens": 1, "temperature": 0.0}),
        request(0, {"max_new_tokens": 8, "temperature": 0.9, "do_sample": False}),
    ]
    outputs = simple_model.generate_until(requests)
    assert outputs[0] == outputs[2] == outputs[4] == "yes"
    assert outputs[1] == "ye"
    assert outputs[3] != "yes" and "yes".startswith(outputs[3])


def test_loglikelihood_prefers_the_scripted_answer(simple_model):
    task = FakeTask(pope_doc_to_text)
    requests = [
        Instance(
            "loglikelihood",
            ("q", target, task.doc_to_visual, 0, "tiny", "test"),
            0,
            metadata={"task": "tiny", "doc_id": 0, "repeats": 1},
        )
        for target in ("yes", "no")
    ]
    (yes_lp, yes_greedy), (no_lp, no_greedy) = simple_model.loglikelihood(requests)
    assert yes_greedy and not no_greedy and yes_lp > no_lp


@pytest.mark.slow  # tests/test_eval_all.py runs the same lmms-eval CLI path on a POPE task, with six more
def test_lmms_eval_cli_on_tiny_pope_task(yes_checkpoint, tmp_path):
    import datasets

    answers = ["yes", "no", "yes", "no"]
    rows = {
        "question_id": [str(i) for i in range(4)],
        "question": [f"Is there a {c} square in the image?" for c in COLOURS],
        "answer": answers,
        "image": [Image.new("RGB", (48 + 8 * i, 40), c) for i, c in enumerate(COLOURS)],
        "category": ["random"] * 4,
    }
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(
        task_dir / "tiny_pope.parquet"
    )
    pope = "lmms_eval.tasks.pope.utils"
    (task_dir / "tiny_pope.yaml").write_text(
        textwrap.dedent(f"""\
        task: vitsplit_tiny_pope
        dataset_path: parquet
        dataset_kwargs:
          data_files:
            test: tiny_pope.parquet
        test_split: test
        output_type: generate_until
        doc_to_visual: !function {pope}.pope_doc_to_visual
        doc_to_text: !function {pope}.pope_doc_to_text
        doc_to_target: answer
        generation_kwargs:
          max_new_tokens: 8
          temperature: 0
          do_sample: false
        process_results: !function {pope}.pope_process_results
        metric_list:
          - metric: pope_accuracy
            aggregation: !function {pope}.pope_aggregate_accuracy
            higher_is_better: true
          - metric: pope_f1_score
            aggregation: !function {pope}.pope_aggregate_f1_score
            higher_is_better: true
        lmms_eval_specific_kwargs:
          default:
            pre_prompt: ""
            post_prompt: {json.dumps(SHORT_ANSWER)}
        """)
    )
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf_cache"),
        "PYTHON": sys.executable,
        "OUTPUT": str(out),
        "TASKS": "vitsplit_tiny_pope",
        "BATCH_SIZE": "3",
    }
    # through the shipped benchmark script, which runs the real `python -m lmms_eval` CLI
    result = subprocess.run(
        ["bash", str(EVAL_DIR / "pope.sh"), str(yes_checkpoint), "--include_path", str(task_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    log = result.stdout + result.stderr
    results_files = sorted(out.rglob("*_results.json"))
    assert results_files, f"lmms-eval wrote no results (exit {result.returncode}):\n{log[-4000:]}"
    assert result.returncode == 0 and f"`{results_files[-1]}`" in result.stdout, log[-4000:]
    summary = json.loads(results_files[-1].read_text())
    metrics = summary["results"]["vitsplit_tiny_pope"]
    # the scripted model always says "yes": right on the two "yes" questions, wrong on the two "no"
    assert metrics["pope_accuracy,none"] == pytest.approx(0.5)
    assert metrics["pope_f1_score,none"] == pytest.approx(2 / 3)
    assert summary["n-samples"]["vitsplit_tiny_pope"]["effective"] == 4
    assert "LlavaViTSplitChat" in summary["config"]["model_backend"]
    samples = [json.loads(line) for f in out.rglob("*samples_vitsplit_tiny_pope*.jsonl") for line in f.open()]
    assert sorted(s["target"] for s in samples) == sorted(answers)
    assert all(s["filtered_resps"] in ("yes", ["yes"]) for s in samples)


class TwoImageTask(FakeTask):
    """A task whose every doc shows two images: its own and the next doc's."""

    def __init__(self, docs, doc_to_text):
        super().__init__(doc_to_text)
        self.docs = docs

    def doc_to_visual(self, doc):
        return [doc["image"], self.docs[(self.docs.index(doc) + 1) % len(self.docs)]["image"]]


def test_requests_with_several_images(simple_model):
    from llava_vitsplit.lmms_eval_plugin.model import LlavaViTSplitChat

    docs = simple_model.task_dict["tiny"]["test"]
    task = TwoImageTask(docs, lambda doc, kwargs: doc["question"])  # not a LLaVA-1.5 task: the context
    prompt, images = simple_model._simple_item("Which is blue?", task.doc_to_visual, 1, "tiny", "test")
    assert [image.size for image in images] == [docs[1]["image"].size, docs[2]["image"].size]
    assert "USER: <image>\n<image>\nWhich is blue? ASSISTANT:" in prompt  # both tags first, in order
    prompt, _ = simple_model._simple_item("Is <image> like <image>?", task.doc_to_visual, 0, "tiny", "test")
    assert "USER: Is <image> like <image>? ASSISTANT:" in prompt  # tags where the task put them
    two = Instance(
        "generate_until",
        ("c", {"max_new_tokens": 8}, task.doc_to_visual, 2, "tiny", "test"),
        0,
        metadata={"task": "tiny", "doc_id": 2, "repeats": 1},
    )
    assert simple_model.generate_until([two, request(0, {"max_new_tokens": 8})]) == ["yes", "yes"]

    chat = LlavaViTSplitChat.__new__(LlavaViTSplitChat)  # the loaded model, without a second load
    chat.__dict__.update(simple_model.__dict__)
    parts = [{"type": "image", "url": docs[0]["image"]}, {"type": "image", "url": docs[1]["image"]}]
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": "Same colour?"}]}]
    messages_task = type("T", (), {"config": type("C", (), {"doc_to_messages": "given"})()})()
    doc_to_messages = type("M", (), {"__call__": lambda self, doc: messages, "__self__": messages_task})()
    prompt, images = chat._item(("c", doc_to_messages, {}, 0, "tiny", "test"))
    assert len(images) == 2 and "USER: <image>\n<image>\nSame colour? ASSISTANT:" in prompt

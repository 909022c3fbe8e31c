"""Per-benchmark prompt fidelity: each paper benchmark's doc (in the built-in task's schema) is rendered by
the built-in ``doc_to_text``/``doc_to_visual`` through the ``llava_vitsplit`` model class, and the full prompt
is compared byte for byte with the prompt LLaVA-1.5's evaluation scripts sent (written out below)."""

from __future__ import annotations

import importlib

import pytest
from PIL import Image

pytest.importorskip("lmms_eval")
from lmms_eval.api.instance import Instance  # noqa: E402

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
IMAGE = Image.new("RGB", (40, 30), "red")


def llava15_prompt(question: str) -> str:
    """LLaVA-1.5's vicuna_v1 prompt for one image and ``question``."""
    return f"{SYSTEM} USER: <image>\n{question} ASSISTANT:"


class BuiltinTask:
    """An lmms-eval Task stand-in owning a built-in task's ``doc_to_text`` and ``doc_to_visual``."""

    def __init__(self, module: str, doc_to_text: str, doc_to_visual: str):
        utils = importlib.import_module(f"lmms_eval.tasks.{module}")
        self.config = type(
            "Config", (), {"doc_to_text": staticmethod(getattr(utils, doc_to_text)), "doc_to_messages": None}
        )()
        self._doc_to_visual = getattr(utils, doc_to_visual)

    def doc_to_visual(self, doc):
        return self._doc_to_visual(doc)


MMBENCH_DOC = {
    "index": 7,
    "question": "Which mode of transport is shown?",
    "hint": "The picture was taken in a city.",
    "A": "train",
    "B": "bus",
    "C": "bicycle",
    "D": "nan",
    "answer": "A",
    "category": "object_localization",
    "L2-category": "finegrained_perception (instance-level)",
    "source": "MMBench",
    "split": "dev",
    "image": IMAGE,
}
# (module, doc_to_text, doc_to_visual, doc, the question LLaVA-1.5 sent)
CASES = {
    "vqav2": (
        "vqav2.utils",
        "vqav2_doc_to_text",
        "vqav2_doc_to_visual",
        {"question_id": 1, "question": "What colour is the Bus?", "image": IMAGE},
        "What colour is the Bus?\nAnswer the question using a single word or phrase.",
    ),
    "vizwiz": (
        "vizwiz_vqa.utils",
        "vizwiz_vqa_doc_to_text",
        "vizwiz_vqa_doc_to_visual",
        {"question_id": "VizWiz_test_1.jpg", "question": "Is it a Rose or a Tulip?", "image": IMAGE},
        "Is it a Rose or a Tulip?\nWhen the provided information is insufficient, respond with "
        "'Unanswerable'.\nAnswer the question using a single word or phrase.",
    ),
    "scienceqa": (
        "scienceqa.utils",
        "sqa_doc_to_text",
        "sqa_doc_to_visual",
        {
            "question": "Which property do these three objects have in common?",
            "hint": "Select the best answer.",
            "choices": ["shiny", "slippery", "opaque"],
            "answer": 2,
            "image": IMAGE,
        },
        "Context: Select the best answer.\nWhich property do these three objects have in common?\n"
        "A. shiny\nB. slippery\nC. opaque\nAnswer with the option's letter from the given choices directly.",
    ),
    "pope": (
        "pope.utils",
        "pope_doc_to_text",
        "pope_doc_to_visual",
        {"question_id": "1", "question": "Is there a dog in the image?", "answer": "no", "image": IMAGE},
        "Is there a dog in the image?\nAnswer the question using a single word or phrase.",
    ),
    "mmbench": (
        "mmbench.en_utils",
        "mmbench_doc_to_text",
        "mmbench_doc_to_visual",
        MMBENCH_DOC,
        "The picture was taken in a city.\nWhich mode of transport is shown?\nA. train\nB. bus\nC. bicycle\n"
        "Answer with the option's letter from the given choices directly.",
    ),
    "mmbench_no_hint": (
        "mmbench.en_utils",
        "mmbench_doc_to_text",
        "mmbench_doc_to_visual",
        {**MMBENCH_DOC, "hint": float("nan")},
        "Which mode of transport is shown?\nA. train\nB. bus\nC. bicycle\n"
        "Answer with the option's letter from the given choices directly.",
    ),
    "mmvet": (
        "mmvet.utils",
        "doc_to_text",
        "mmvet_doc_to_visual",
        {"question_id": "v1_0", "question": "What is x in the equation?", "image": IMAGE},
        "What is x in the equation?",
    ),
    "llava_wild": (
        "llava-in-the-wild.utils",
        "llava_doc_to_text",
        "llava_doc_to_visual",
        {"question_id": 0, "question": "What is the name of this famous sight in the photo?", "image": IMAGE},
        "What is the name of this famous sight in the photo?",
    ),
}
OPEN_ENDED = {"mmvet", "llava_wild"}


@pytest.fixture(autouse=True)
def _judge_key(monkeypatch):
    # mmvet/utils.py builds an OpenAI judge client at import time, which wants a key (never used here)
    monkeypatch.setenv("OPENAI_API_KEY", "unused-in-this-test")


@pytest.fixture(scope="module")
def model(yes_checkpoint):
    from llava_vitsplit.lmms_eval_plugin.model import LlavaViTSplit

    return LlavaViTSplit(pretrained=str(yes_checkpoint), device="cpu")


def render(model, name: str) -> tuple[str, list]:
    module, doc_to_text, doc_to_visual, doc, _ = CASES[name]
    task = BuiltinTask(module, doc_to_text, doc_to_visual)
    model.task_dict = {name: {"test": [doc]}}
    return model._simple_item("lmms-eval's own prompt", task.doc_to_visual, 0, name, "test")


@pytest.mark.parametrize("name", sorted(CASES))
def test_prompt_matches_llava15_byte_for_byte(model, name):
    prompt, images = render(model, name)
    assert prompt == llava15_prompt(CASES[name][-1])
    assert len(images) == 1 and images[0].size == IMAGE.size


@pytest.mark.parametrize("name", sorted(CASES))
def test_generation_settings_are_llava15s(model, name):
    module, doc_to_text, doc_to_visual, _, _ = CASES[name]
    task = BuiltinTask(module, doc_to_text, doc_to_visual)
    task_gen_kwargs = {"until": ["\n\n"], "max_new_tokens": 16, "temperature": 0.2, "do_sample": False}
    args = ("ctx", task_gen_kwargs, task.doc_to_visual, 0, name, "test")
    gen_kwargs = model._with_llava15_generation(args)[1]
    assert gen_kwargs["until"] == []  # LLaVA-1.5 stopped at EOS only
    if name in OPEN_ENDED:
        assert (gen_kwargs["max_new_tokens"], gen_kwargs["temperature"]) == (1024, 0)
    else:
        assert gen_kwargs["max_new_tokens"] == 16


@pytest.fixture(scope="module")
def bell_model(tmp_path_factory):
    """A tiny model that answers every prompt with a two-line text holding a control character (BEL)."""
    from llava_vitsplit.lmms_eval_plugin.model import LlavaViTSplit
    from llava_vitsplit.testing.scripted import script_reply
    from llava_vitsplit.testing.tiny import build_tiny_checkpoint

    path, tiny, processor = build_tiny_checkpoint(tmp_path_factory.mktemp("bell"))
    # (the tiny tokenizer has no single "\n\n" token, which script_reply needs, so one newline)
    script_reply(tiny, processor.tokenizer, BELL_REPLY)
    tiny.save_pretrained(path)
    return LlavaViTSplit(pretrained=str(path), device="cpu")


BELL_REPLY = "Red.\a\nBlue"


def generate_one(model, name: str, gen_kwargs: dict) -> str:
    module, doc_to_text, doc_to_visual, doc, _ = CASES[name]
    task = BuiltinTask(module, doc_to_text, doc_to_visual)
    model.task_dict = {name: {"test": [doc]}}
    args = ("q", gen_kwargs, task.doc_to_visual, 0, name, "test")
    (answer,) = model.generate_until(
        [Instance("generate_until", args, 0, metadata={"task": name, "doc_id": 0, "repeats": 1})]
    )
    return answer


def test_mmvet_multi_line_answer_is_not_cut_at_the_task_stop(bell_model):
    task_stops = {"until": ["\n\n", "\n"], "max_new_tokens": 1024, "temperature": 0.2, "do_sample": False}
    assert generate_one(bell_model, "mmvet", task_stops) == BELL_REPLY


def test_mmbench_answer_fits_the_submission_spreadsheet(bell_model, tmp_path):
    import pandas as pd

    answer = generate_one(bell_model, "mmbench", {"until": ["ASSISTANT:"], "max_new_tokens": 16})
    assert answer == "Red.\nBlue"  # the BEL removed, nothing else
    pd.DataFrame([{"prediction": answer}]).to_excel(tmp_path / "submission.xlsx", index=False)


def test_task_prompt_style_keeps_lmms_eval_rendering(yes_checkpoint):
    from llava_vitsplit.lmms_eval_plugin.model import LlavaViTSplit

    model = LlavaViTSplit(pretrained=str(yes_checkpoint), device="cpu", prompt_style="task")
    prompt, _ = render(model, "vizwiz")
    assert prompt == llava15_prompt("lmms-eval's own prompt")

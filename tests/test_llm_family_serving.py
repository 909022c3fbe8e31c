"""``chat``, the demo and the lmms-eval plugin on a tiny checkpoint of each modern LLM family (Llama-3,
Qwen2.5, Qwen3, Gemma-3 text), run in-process: each surface sends the prompt the training renderer gives
the same conversation (byte for byte), and the reply stops at the family's end-of-turn token.

The checkpoints' LMs are scripted (``testing/scripted.py``) to answer "yes" and then the tokenizer's EOS,
which for these families is the end-of-turn token; after it the scripted LM would say "yes" again, so a
reply of exactly "yes" with room for more tokens means generation stopped there, and the recorded token
ids show which token ended it.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from llava_vitsplit.llms import llm_family
from llava_vitsplit.llms.registry import prompts_of
from llava_vitsplit.serve import generation

FAMILIES = ("gemma3", "llama3", "qwen2_5", "qwen3")
IMAGE_TAG = "<image>"
MAX_NEW_TOKENS = 12  # room for several "yes<end_of_turn>" rounds if generation did not stop


@pytest.fixture(scope="module", params=FAMILIES)
def family_checkpoint(request, tmp_path_factory):
    """``(family, path)``: a saved tiny checkpoint of ``family`` whose LM answers "yes" + end of turn."""
    from llava_vitsplit.testing.scripted import script_reply
    from llava_vitsplit.testing.tiny import build_tiny_checkpoint

    family = request.param
    path, model, processor = build_tiny_checkpoint(tmp_path_factory.mktemp(family), llm_family=family)
    assert processor.tokenizer.eos_token == llm_family(family).end_of_turn
    script_reply(model, processor.tokenizer, "yes")
    model.save_pretrained(path)
    return family, path


class Sent:
    """What the serving code handed the model: the prompt texts and the generated token ids."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.new_tokens: list[list[int]] = []


@pytest.fixture
def sent(monkeypatch):
    """Record every prompt ``prepare_inputs`` tokenises and the new tokens ``generate`` returns."""
    record = Sent()
    original_prepare = generation.prepare_inputs

    def prepare_inputs(loaded, prompts, images):
        record.prompts.extend(prompts)
        if "generate" not in vars(loaded.model):  # wrap each load's generate once
            original_generate = loaded.model.generate

            def generate(**kwargs):
                output = original_generate(**kwargs)  # [B, T + new]
                record.new_tokens += output[:, kwargs["input_ids"].shape[1] :].tolist()
                return output

            loaded.model.generate = generate  # instance attribute: this load only, this test only
        return original_prepare(loaded, prompts, images)

    monkeypatch.setattr(generation, "prepare_inputs", prepare_inputs)
    return record


def training_prompt(family: str, path, user_texts: list[str]) -> str:
    """The prompt the training renderer gives the last reply of a record of these user turns ("yes" each)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    messages = []
    for text in user_texts:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "yes"}]
    return prompts_of(llm_family(family).segments(messages, tokenizer))[-1]


def assert_stopped_at_end_of_turn(family: str, path, sent: Sent) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    end_of_turn = tokenizer.convert_tokens_to_ids(llm_family(family).end_of_turn)
    yes = tokenizer.encode("yes", add_special_tokens=False)
    pad = tokenizer.pad_token_id
    assert sent.new_tokens
    for row in sent.new_tokens:
        assert row[: len(yes) + 1] == [*yes, end_of_turn], (family, row)
        assert set(row[len(yes) + 1 :]) <= {pad}, (family, row)  # a batch pads rows that finished first


def test_chat_prompts_like_training_and_stops_at_end_of_turn(family_checkpoint, sent, tmp_path):
    from llava_vitsplit.serve import chat

    family, path = family_checkpoint
    image = tmp_path / "red.png"
    Image.new("RGB", (40, 30), "red").save(image)
    argv = ["--model", str(path), "--image", str(image), "--temperature", "0", "--device", "cpu"]
    args = chat.build_parser().parse_args([*argv, "--max-new-tokens", str(MAX_NEW_TOKENS)])
    stdout = io.StringIO()
    assert chat.run(args, stdin=io.StringIO("Colour?\nSure?\n"), stdout=stdout) == 0
    assert stdout.getvalue().count("ASSISTANT: yes\n") == 2
    assert sent.prompts == [
        training_prompt(family, path, [f"{IMAGE_TAG}\nColour?"]),
        training_prompt(family, path, [f"{IMAGE_TAG}\nColour?", "Sure?"]),
    ]
    assert_stopped_at_end_of_turn(family, path, sent)


def test_demo_prompts_like_training_and_stops_at_end_of_turn(family_checkpoint, sent, tmp_path):
    from llava_vitsplit.serve.chat_engines import open_chat_engine
    from llava_vitsplit.serve.demo import ChatSession, DemoHandlers

    family, path = family_checkpoint
    image = tmp_path / "blue.png"
    Image.new("RGB", (32, 32), "blue").save(image)
    handlers = DemoHandlers(open_chat_engine("transformers", str(path), device="cpu"))
    session = ChatSession()
    for message in ({"text": "Is it blue?", "files": [str(image)]}, {"text": "Sure?", "files": []}):
        *_, (history, session, _) = handlers.respond(message, session, 0.0, 1.0, MAX_NEW_TOKENS)
        assert history[-1]["role"] == "assistant" and history[-1]["content"] == "yes"
    assert sent.prompts == [
        training_prompt(family, path, [f"{IMAGE_TAG}\nIs it blue?"]),
        training_prompt(family, path, [f"{IMAGE_TAG}\nIs it blue?", "Sure?"]),
    ]
    assert_stopped_at_end_of_turn(family, path, sent)


def test_lmms_eval_plugin_prompts_like_training_and_stops_at_end_of_turn(family_checkpoint, sent):
    pytest.importorskip("lmms_eval")
    from lmms_eval.api.instance import Instance

    from llava_vitsplit.lmms_eval_plugin.model import LlavaViTSplit

    family, path = family_checkpoint
    model = LlavaViTSplit(pretrained=str(path), device="cpu", batch_size="2")
    questions = ["Is there a red square?", "Is there a much larger blue circle on the left?"]
    model.task_dict = {"tiny": {"test": [{} for _ in questions]}}

    def visuals(doc):
        return [Image.new("RGB", (36, 28), "red")]

    requests = [
        Instance(
            "generate_until",
            (question, {"max_new_tokens": MAX_NEW_TOKENS}, visuals, doc_id, "tiny", "test"),
            0,
            metadata={"task": "tiny", "doc_id": doc_id, "repeats": 1},
        )
        for doc_id, question in enumerate(questions)  # a task LLaVA-1.5 did not run: its own prompt
    ]
    assert model.generate_until(requests) == ["yes", "yes"]
    expected = [training_prompt(family, path, [f"{IMAGE_TAG}\n{q}"]) for q in questions]
    assert sorted(sent.prompts) == sorted(expected)
    assert_stopped_at_end_of_turn(family, path, sent)

"""Exact label masks for ``plain``, ``vicuna_v1`` and a tokenizer chat template, on a Llama-style
sentencepiece tokenizer (trained here, loaded from ``tokenizer.model``) and on a byte-level BPE tokenizer.

Every test decodes the labelled token runs and compares them with the replies the template must teach.
"""

from __future__ import annotations

import pytest
import torch
from _script_runs import SHIPPED_DATA

from llava_vitsplit.data.encoding import IGNORE_INDEX, encode
from llava_vitsplit.data.records import DataProblem, parse_record
from llava_vitsplit.data.templates import get_template
from llava_vitsplit.model.parts import processor_from_parts
from llava_vitsplit.testing.tiny import make_bpe_tokenizer, save_tiny_language_model
from llava_vitsplit.testing.tiny_parts import save_tiny_parts

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
RECORD = {
    "id": "r1",
    "image": "x.png",
    "conversations": [
        {"from": "human", "value": "What shape is in the picture?\n<image>"},
        {"from": "gpt", "value": "The picture shows a red circle."},
        {"from": "human", "value": "What colour is it?"},
        {"from": "gpt", "value": "It is red."},
    ],
}
CAPTION = {
    "id": "c1",
    "image": "x.png",
    "conversations": [
        {"from": "human", "value": "Give a brief description of the image.\n<image>"},
        {"from": "gpt", "value": "A blue square on a gray background."},
    ],
}
TEXT_ONLY = {
    "id": "t1",
    "conversations": [
        {"from": "human", "value": "What is 2 plus 3?"},
        {"from": "gpt", "value": "2 plus 3 is 5."},
    ],
}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return save_tiny_parts(tmp_path_factory.mktemp("parts"), SHIPPED_DATA)


@pytest.fixture(scope="module", params=["sentencepiece", "bpe"])
def processor(request, parts, tmp_path_factory):
    if request.param == "sentencepiece":
        llm = parts["llm"]
    else:
        llm = save_tiny_language_model(tmp_path_factory.mktemp("bpe"), make_bpe_tokenizer())
    proc = processor_from_parts(str(parts["vision"]), str(llm))
    proc.kind = request.param
    return proc


def labelled_runs(labels: torch.Tensor) -> list[list[int]]:
    """Contiguous runs of target token ids."""
    runs, current = [], []
    for label in labels.tolist():
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    return runs + ([current] if current else [])


def encode_record(record, processor, template, max_length=None):
    sample = parse_record(record, 0)
    rendered = get_template(template).render(sample, processor.tokenizer)
    return encode(
        rendered,
        processor.tokenizer,
        image_token_id=processor.tokenizer.convert_tokens_to_ids("<image>"),
        num_image_tokens=16,
        max_length=max_length,
        sample_id=sample.id,
    )


def decode(processor, ids):
    return processor.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_vicuna_v1_labels_exactly_the_replies_and_their_end_token(processor):
    tok = processor.tokenizer
    enc = encode_record(RECORD, processor, "vicuna_v1")
    runs = labelled_runs(enc.labels)
    replies = [t["value"] for t in RECORD["conversations"][1::2]]
    assert [decode(processor, run).lstrip(" ") for run in runs] == [r + tok.eos_token for r in replies]
    assert all(run[-1] == tok.eos_token_id for run in runs)  # "</s>" text is the EOS token itself
    target = enc.labels != IGNORE_INDEX
    assert torch.equal(enc.labels[target], enc.input_ids[target])
    assert int((enc.input_ids == tok.convert_tokens_to_ids("<image>")).sum()) == 16
    assert enc.labels[0] == IGNORE_INDEX
    if processor.kind == "sentencepiece":  # Llama prepends <s>; the byte-level BPE has no post-processor
        assert enc.input_ids[0] == tok.bos_token_id
    prompt = decode(processor, enc.input_ids[~target].tolist())
    assert "USER: " in prompt and "ASSISTANT:" in prompt and "What colour is it?" in prompt
    assert "It is red" not in prompt and "red circle" not in prompt


def test_vicuna_v1_text_matches_the_processor_chat_template(processor):
    """Training renders byte-for-byte what inference's chat template renders."""
    sample = parse_record(RECORD, 0)
    rendered = get_template("vicuna_v1").render(sample, processor.tokenizer)
    messages = [{"role": t.role, "content": t.text} for t in sample.turns]
    assert rendered.text == processor.apply_chat_template(messages, tokenize=False)
    prompt = processor.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert rendered.text.startswith(prompt)


def test_plain_labels_only_the_caption_and_newline(processor):
    enc = encode_record(CAPTION, processor, "plain")
    runs = labelled_runs(enc.labels)
    assert len(runs) == 1
    assert decode(processor, runs[0]).lstrip(" ") == CAPTION["conversations"][1]["value"] + "\n"
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    first_target = int((enc.labels != IGNORE_INDEX).nonzero()[0])
    bos = [processor.tokenizer.bos_token_id] if processor.kind == "sentencepiece" else []
    assert enc.input_ids[:first_target].tolist() == bos + [image_id] * 16


def test_text_only_sample_has_no_image_tokens(processor):
    enc = encode_record(TEXT_ONLY, processor, "vicuna_v1")
    assert int((enc.input_ids == processor.tokenizer.convert_tokens_to_ids("<image>")).sum()) == 0
    (run,) = labelled_runs(enc.labels)
    assert decode(processor, run).lstrip(" ") == "2 plus 3 is 5." + processor.tokenizer.eos_token


def test_a_tokenizer_template_that_cannot_be_masked_is_one_clear_error(processor):
    """A ``llama`` tokenizer with ChatML tokens is SmolLM2's family; a template that renders otherwise
    (here without SmolLM2's default system prompt) cannot get exact masks: refused, naming the family."""
    from llava_vitsplit.llms import LLMFamilyError
    from llava_vitsplit.llms.registry import resolve_family

    tok = processor.tokenizer
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    try:
        with pytest.raises(LLMFamilyError, match="'llama'.*'smollm2'.*supported families"):
            resolve_family("llama", tok)
    finally:
        tok.chat_template = None


def test_truncation_keeps_the_head_and_a_partial_reply(processor):
    full = encode_record(RECORD, processor, "vicuna_v1")
    first_target = int((full.labels != IGNORE_INDEX).nonzero()[0])
    cut = first_target + 2
    short = encode_record(RECORD, processor, "vicuna_v1", max_length=cut)
    assert torch.equal(short.input_ids, full.input_ids[:cut])
    assert torch.equal(short.labels, full.labels[:cut])


def test_truncation_never_cuts_image_tokens(processor):
    full = encode_record(RECORD, processor, "vicuna_v1")
    image_positions = (full.input_ids == processor.tokenizer.convert_tokens_to_ids("<image>")).nonzero()
    for cut in (int(image_positions[0]) + 5, int(image_positions[0])):  # through the image / just before
        with pytest.raises(DataProblem, match="image_truncated") as info:
            encode_record(RECORD, processor, "vicuna_v1", max_length=cut)
        assert info.value.record_id == "r1"


def test_truncation_that_leaves_no_target_is_a_problem(processor):
    full = encode_record(TEXT_ONLY, processor, "vicuna_v1")
    first_target = int((full.labels != IGNORE_INDEX).nonzero()[0])
    with pytest.raises(DataProblem) as info:
        encode_record(TEXT_ONLY, processor, "vicuna_v1", max_length=first_target)
    assert info.value.kind == "no_target_tokens" and info.value.record_id == "t1"


def test_image_tag_must_be_one_token():
    tok = make_bpe_tokenizer()  # no <image> special token: it splits into pieces

    class Proc:
        tokenizer = tok

    with pytest.raises(ValueError, match="one special token"):
        encode_record(RECORD, Proc, "vicuna_v1")


# -- every token the model generates at inference is supervised in training ---------------------------
ANSWERS = ["3", "42 apples.", "猫です。", "東京", "🙂 yes", "Yes, it is."]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's byte-level BPE tokenizer and ChatML template, read from the GGUF asset."""
    from transformers import AutoTokenizer

    from llava_vitsplit.assets import smollm2_gguf
    from llava_vitsplit.assets.sources import AssetSourceError, package_file

    try:
        gguf = package_file(smollm2_gguf.GGUF_DISTRIBUTION, smollm2_gguf.GGUF_SUFFIX)
    except AssetSourceError as err:
        pytest.skip(str(err))
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture(params=["vicuna_v1", "smollm2"])
def family_tokenizer(request, parts):
    """The Llama-style sentencepiece tokenizer (Vicuna's family) or SmolLM2's real one (from its GGUF)."""
    if request.param == "smollm2":
        return "smollm2", request.getfixturevalue("smollm2_tokenizer")
    return "vicuna_v1", processor_from_parts(str(parts["vision"]), str(parts["llm"])).tokenizer


def inference_prompt_ids(tokenizer, template: str, messages: list[dict], add_special_tokens: bool):
    """The ids inference feeds before the model answers ``messages`` (ending with a user turn)."""
    from llava_vitsplit.llms import llm_family

    prompt = llm_family(template).render_text(messages, tokenizer, add_generation_prompt=True)
    return tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]


@pytest.mark.parametrize("answer", ANSWERS)
def test_every_token_generated_after_the_prompt_is_supervised(family_tokenizer, answer):
    template, tok = family_tokenizer
    record = {
        "id": "a1",
        "conversations": [
            {"from": "human", "value": "How many?"},
            {"from": "gpt", "value": answer},
            {"from": "human", "value": "And again?"},
            {"from": "gpt", "value": answer},
        ],
    }
    sample = parse_record(record, 0)
    rendered = get_template(template).render(sample, tok)
    enc = encode(rendered, tok, image_token_id=-1, num_image_tokens=16, max_length=None, sample_id="a1")
    ids, labels = enc.input_ids.tolist(), enc.labels.tolist()
    messages = [{"role": t.role, "content": t.text} for t in sample.turns]
    first = inference_prompt_ids(tok, template, messages[:1], rendered.add_special_tokens)
    last = inference_prompt_ids(tok, template, messages[:3], rendered.add_special_tokens)
    for prompt in (first, last):
        assert ids[: len(prompt)] == prompt, "training must see the inference prompt's exact tokens"
        assert labels[len(prompt)] == ids[len(prompt)], tok.convert_ids_to_tokens(ids[len(prompt) :])
    assert all(label == IGNORE_INDEX for label in labels[: len(first)])
    end = len(ids) - (template == "smollm2")  # ChatML's newline after <|im_end|> is not generated
    assert labels[len(last) : end] == ids[len(last) : end], "the last reply and its end are learnt in full"
    assert all(label == IGNORE_INDEX for label in labels[end:])

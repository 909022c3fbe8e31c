"""Exact training masks for every registered LLM family, against its real (stored, released) chat template.

Each family gets a tiny byte-level BPE tokenizer carrying its special tokens and its released template
(``testing/llm_families.py``). For 1-turn and multi-turn records, with and without an image or a system
prompt, with digit / CJK / emoji replies: the training text is the template's rendering byte for byte;
every reply's prompt is the template's generation prompt (Qwen3: the last reply's; earlier ones are in
the template's history form), tokenized as inference tokenizes it; and the supervised tokens are exactly
each reply and its end-of-turn token, nothing else.
"""

from __future__ import annotations

import pytest

from llava_vitsplit.data.encoding import IGNORE_INDEX, encode
from llava_vitsplit.data.records import DataProblem, Sample, Turn
from llava_vitsplit.data.templates import FamilyTemplate, get_template
from llava_vitsplit.llms import FAMILIES, IMAGE_TOKEN, llm_family
from llava_vitsplit.llms.registry import bos_in_text, prompts_of
from llava_vitsplit.testing.llm_families import make_family_tokenizer

FAMILY_NAMES = sorted(FAMILIES)
# What the model generates for a reply, per family, written out independently of the renderers.
GENERATED = {
    "vicuna_v1": lambda reply, tok: " " + reply + tok.eos_token,
    "llama3": lambda reply, tok: reply.strip() + "<|eot_id|>",
    "qwen2_5": lambda reply, tok: reply + "<|im_end|>",
    "qwen3": lambda reply, tok: reply + "<|im_end|>",
    "gemma3": lambda reply, tok: reply.strip() + "<end_of_turn>",
    "smollm2": lambda reply, tok: reply + "<|im_end|>",
}
ONE_TURN = [("user", f"{IMAGE_TOKEN}\nWhat shape is in the picture?"), ("assistant", "A red circle.")]
MULTI_TURN = [
    ("user", f"{IMAGE_TOKEN}\nHow many circles are there?"),
    ("assistant", "123"),
    ("user", "Say it in Chinese."),
    ("assistant", "一百二十三 🙂"),
    ("user", "And with an emoji?"),
    ("assistant", "🚀 4567"),
]
TEXT_ONLY = [("user", "What is 2 plus 3?"), ("assistant", "2 plus 3 is 5.")]
CONVERSATIONS = {"one_turn": ONE_TURN, "multi_turn": MULTI_TURN, "text_only": TEXT_ONLY}


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family(request):
    tokenizer = make_family_tokenizer(request.param)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return llm_family(request.param), tokenizer


def messages_of(turns, system=None) -> list[dict]:
    head = [{"role": "system", "content": system}] if system is not None else []
    return head + [{"role": role, "content": text} for role, text in turns]


def inference_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids as the processor tokenizes it (no second BOS after a template-written one)."""
    return tokenizer(prompt, add_special_tokens=not bos_in_text(tokenizer, prompt))["input_ids"]


def encode_turns(spec, tokenizer, turns, system=None, max_length=None):
    segments = spec.segments(messages_of(turns, system), tokenizer)
    text = "".join(t for t, _ in segments)
    rendered = FamilyTemplate(spec).render(
        Sample("s", ("x.png",), tuple(Turn(r, t) for r, t in turns)), tokenizer
    )
    if system is not None:  # records carry no system turn: render the system prompt through the spec
        starts = [len("".join(t for t, _ in segments[:i])) for i in range(len(segments))]
        targets = [(s, s + len(t)) for s, (t, g) in zip(starts, segments, strict=True) if g]
        rendered = type(rendered)(text, targets, not bos_in_text(tokenizer, text))
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    return segments, encode(
        rendered, tokenizer, image_token_id=image_id, num_image_tokens=1, max_length=max_length
    )


def supervised_runs(encoded) -> list[list[int]]:
    runs, current = [], []
    for token, label in zip(encoded.input_ids.tolist(), encoded.labels.tolist(), strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_training_text_is_the_released_templates_rendering(family, name, system):
    spec, tokenizer = family
    messages = messages_of(CONVERSATIONS[name], system)
    segments = spec.segments(messages, tokenizer)
    assert "".join(t for t, _ in segments) == spec.render_text(messages, tokenizer)
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    prompts = prompts_of(segments)
    assert len(prompts) == len(replies)
    for position, (index, prompt) in enumerate(zip(replies, prompts, strict=True)):
        last = position == len(replies) - 1
        if spec.name == "qwen3" and not last:  # earlier replies: the template's history form
            history = spec.render_text(messages[: index + 1], tokenizer)
            assert history.startswith(prompt) and not prompt.endswith("</think>\n\n")
            continue
        assert prompt == spec.render_text(messages[:index], tokenizer, add_generation_prompt=True)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_exactly_the_generated_tokens_are_supervised(family, name, system):
    spec, tokenizer = family
    turns = CONVERSATIONS[name]
    segments, encoded = encode_turns(spec, tokenizer, turns, system)
    ids = encoded.input_ids.tolist()
    replies = [text for role, text in turns if role == "assistant"]
    expected = [
        tokenizer(GENERATED[spec.name](r, tokenizer), add_special_tokens=False)["input_ids"] for r in replies
    ]
    assert supervised_runs(encoded) == expected
    for prompt, target in zip(prompts_of(segments), expected, strict=True):
        prompt_ids = inference_ids(tokenizer, prompt)
        assert ids[: len(prompt_ids)] == prompt_ids  # the inference prompt's tokens, then the reply's
        assert ids[len(prompt_ids) : len(prompt_ids) + len(target)] == target
    if spec.tokenizer_adds_bos:  # one BOS, whether the template or the tokenizer writes it
        assert ids.count(tokenizer.bos_token_id) == 1


def test_truncation_keeps_a_partial_reply_and_masks_nothing_else(family):
    spec, tokenizer = family
    _, full = encode_turns(spec, tokenizer, MULTI_TURN)
    first_label = next(i for i, label in enumerate(full.labels.tolist()) if label != IGNORE_INDEX)
    cut = first_label + 1
    _, short = encode_turns(spec, tokenizer, MULTI_TURN, max_length=cut)
    assert short.input_ids.tolist() == full.input_ids.tolist()[:cut]
    assert short.labels.tolist() == full.labels.tolist()[:cut]
    with pytest.raises(DataProblem, match="no_target_tokens"):
        encode_turns(spec, tokenizer, MULTI_TURN, max_length=first_label)


def test_qwen3_multi_turn_trains_every_reply_without_supervising_the_empty_think_block():
    """The defect: the tokenizer-template renderer refused 2-turn Qwen3 records (no growing prefix) and
    made ``<think>\\n\\n</think>\\n\\n`` a target of 1-turn ones."""
    tokenizer = make_family_tokenizer("qwen3")
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    template = get_template("auto", family="qwen3")
    for turns in (ONE_TURN, MULTI_TURN):
        sample = Sample("q", ("x.png",), tuple(Turn(r, t) for r, t in turns))
        rendered = template.render(sample, tokenizer)
        targets = [rendered.text[a:b] for a, b in rendered.targets]
        assert targets == [t + "<|im_end|>" for r, t in turns if r == "assistant"]
        assert not any("<think>" in t for t in targets)
        assert rendered.text.count("<think>\n\n</think>\n\n") == 1  # the last reply's prompt only


def test_qwen3_record_with_reasoning_trains_the_think_block():
    tokenizer = make_family_tokenizer("qwen3")
    spec = llm_family("qwen3")
    messages = messages_of([("user", "2+3?"), ("assistant", "<think>\nadd them\n</think>\n\n5")])
    segments = spec.segments(messages, tokenizer)
    assert [t for t, g in segments if g] == ["<think>\nadd them\n</think>\n\n5<|im_end|>"]
    assert "".join(t for t, _ in segments) == spec.render_text(messages, tokenizer)
    thinking_prompt = tokenizer.apply_chat_template(
        messages[:1], tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    assert prompts_of(segments) == [thinking_prompt]


def test_gemma3_folds_the_system_prompt_into_the_first_user_turn():
    tokenizer = make_family_tokenizer("gemma3")
    segments = llm_family("gemma3").segments(messages_of(TEXT_ONLY, "Be brief."), tokenizer)
    text = "".join(t for t, _ in segments)
    assert text.startswith("<bos><start_of_turn>user\nBe brief.\n\nWhat is 2 plus 3?<end_of_turn>\n")
    assert "<start_of_turn>model\n" in text and "system" not in text

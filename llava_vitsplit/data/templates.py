"""Conversation templates: render a ``Sample`` to one string plus the character spans to learn.

- ``plain`` (stage 1, LLaVA's pre-training format): ``<image>`` (one per image) + caption + ``"\\n"``; the
  user text is dropped and the caption with its closing newline is the target.
- ``vicuna_v1`` (stage 2): ``SYSTEM USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>``;
  each reply with the space before it and its end token (the tokenizer's EOS text) are targets: the
  inference prompt ends at ``ASSISTANT:``, so every token after it is the model's to generate. The text is byte-identical to the
  processor's ``vicuna_v1`` chat template, so training and inference see the same prompt.
- ``chat_template``: the tokenizer's own chat template (e.g. SmolLM2's ChatML). Target spans are found by
  rendering the conversation up to each reply with and without it, so whatever the template appends
  after a reply (end-of-turn tokens) is learned too.

Targets are character spans, not token counts: ``encoding.encode`` tokenizes the whole string once and
labels the tokens that overlap a span, so no per-turn tokenization can drift from the real one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llava_vitsplit.data.records import ASSISTANT, IMAGE_TAG, DataProblem, Sample
from llava_vitsplit.model.chat_templates import VICUNA_V1_SYSTEM


@dataclass
class Rendered:
    """Template output: ``targets`` are ``[start, end)`` character spans of ``text``."""

    text: str
    targets: list[tuple[int, int]] = field(default_factory=list)
    add_special_tokens: bool = True  # prepend the tokenizer's BOS (chat templates write their own)


class Template:
    name: str = ""

    def render(self, sample: Sample, tokenizer) -> Rendered:
        raise NotImplementedError


class PlainTemplate(Template):
    name = "plain"

    def render(self, sample: Sample, tokenizer) -> Rendered:
        if len(sample.turns) != 2:
            raise DataProblem(
                sample.id,
                "bad_template_input",
                f"'plain' needs one question and one caption, got {len(sample.turns)} turns",
            )
        prefix = IMAGE_TAG * len(sample.images)  # the user text (and where its tags were) is dropped
        text = prefix + sample.turns[1].text + "\n"
        return Rendered(text, [(len(prefix), len(text))])


class VicunaV1Template(Template):
    name = "vicuna_v1"

    def __init__(self, system: str = VICUNA_V1_SYSTEM) -> None:
        self.system = system

    def render(self, sample: Sample, tokenizer) -> Rendered:
        eos = tokenizer.eos_token
        if not eos:
            raise ValueError("vicuna_v1 needs a tokenizer with an eos_token")
        text = self.system + " "
        targets = []
        for turn in sample.turns:
            if turn.role == ASSISTANT:
                # The inference prompt ends at "ASSISTANT:", so the model generates everything after it,
                # the space included: Llama/Vicuna sentencepiece splits " 3" (digits, many CJK and
                # emoji openings) into a bare '▁' piece and '3', and the '▁' must be learnt too.
                text += "ASSISTANT:"
                start = len(text)
                text += " " + turn.text + eos
                targets.append((start, len(text)))
            else:
                text += "USER: " + turn.text + " "
        return Rendered(text, targets)


class ChatTemplate(Template):
    name = "chat_template"

    def render(self, sample: Sample, tokenizer) -> Rendered:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("--version chat_template needs a tokenizer with a chat template")
        messages = [{"role": t.role, "content": t.text} for t in sample.turns]

        def apply(msgs, generation_prompt):
            return tokenizer.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=generation_prompt
            )

        text = apply(messages, False)
        targets = []
        for i, turn in enumerate(sample.turns):
            if turn.role != ASSISTANT:
                continue
            before, through = apply(messages[:i], True), apply(messages[: i + 1], False)
            if not (through.startswith(before) and text.startswith(through)):
                raise ValueError(
                    "the tokenizer's chat template does not render conversations as a growing prefix; "
                    "use --version vicuna_v1 or plain"
                )
            targets.append((len(before), len(through)))
        return Rendered(text, targets, add_special_tokens=False)


TEMPLATES: dict[str, type[Template]] = {
    "plain": PlainTemplate,
    "vicuna_v1": VicunaV1Template,
    "chat_template": ChatTemplate,
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; valid: {sorted(TEMPLATES)}")
    return TEMPLATES[name]()

"""Conversation templates: render a ``Sample`` to one string plus the character spans to learn.

- ``plain`` (stage 1, LLaVA's pre-training format): ``<image>`` (one per image) + caption + ``"\\n"``; the
  user text is dropped and the caption with its closing newline is the target.
- a registered LLM family (``vicuna_v1``, ``llama3``, ``qwen2_5``, ``qwen3``, ``gemma3``, ``smollm2``;
  ``llava_vitsplit/llms``), and ``auto``: the LLM's own family, stage 2's default. The family's renderer
  writes the bytes its released chat template renders (the template the processor saves for inference)
  and marks what the model generates: each reply and its end-of-turn token are targets, nothing else.

Targets are character spans, not token counts: ``encoding.encode`` tokenizes the whole string once and
labels the tokens that overlap a span, so no per-turn tokenization can drift from the real one. A text
that starts with the BOS token (templates that write it) gets no second one, as the processor does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llava_vitsplit.data.records import IMAGE_TAG, DataProblem, Sample
from llava_vitsplit.llms import FAMILIES, LLMFamilySpec, llm_family
from llava_vitsplit.llms.registry import bos_in_text
from llava_vitsplit.llms.renderers import ConversationError


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


class FamilyTemplate(Template):
    """A registered LLM family's conversation format (``llava_vitsplit.llms``): its renderer's text, with
    every generated segment (replies and their end-of-turn tokens) as a target."""

    def __init__(self, spec: LLMFamilySpec) -> None:
        self.spec = spec
        self.name = spec.name

    def render(self, sample: Sample, tokenizer) -> Rendered:
        if not self.spec.eos_text(tokenizer):
            raise ValueError(f"{self.name} needs a tokenizer with an eos_token")
        messages = [{"role": turn.role, "content": turn.text} for turn in sample.turns]
        try:
            segments = self.spec.segments(messages, tokenizer)
        except ConversationError as exc:
            raise DataProblem(sample.id, "bad_template_input", str(exc)) from exc
        text, targets = "", []
        for piece, generated in segments:
            if generated:
                targets.append((len(text), len(text) + len(piece)))
            text += piece
        return Rendered(text, targets, add_special_tokens=not bos_in_text(tokenizer, text))


AUTO = "auto"  # the LLM's own family (the processor's ``llm_family``)
LEGACY_AUTO = "chat_template"  # the earlier name of ``auto``


def template_names() -> list[str]:
    """Every valid ``--conv_template`` (alias ``--version``): ``plain``, ``auto`` and the registered families."""
    return [PlainTemplate.name, AUTO, *FAMILIES]


def get_template(name: str, family: str | None = None) -> Template:
    """The template ``name``; ``auto`` (or ``chat_template``) is ``family``, the LLM's own."""
    if name == PlainTemplate.name:
        return PlainTemplate()
    if name in (AUTO, LEGACY_AUTO):
        if family is None:
            raise ValueError(f"--conv_template {name} needs the LLM's family (a processor with llm_family)")
        name = family
    if name not in FAMILIES:
        raise ValueError(f"unknown conversation template {name!r}; valid: {template_names()}")
    if family is not None and name != family:  # inference renders the LLM's own template
        raise ValueError(f"template {name!r} is another family's format; the LLM is a {family!r} model")
    return FamilyTemplate(llm_family(name))

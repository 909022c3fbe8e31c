"""How LLaVA-1.5 asked each paper benchmark: the question renderers and generation overrides (data only).

A :class:`Protocol` is one benchmark's rendering; the benchmark table (``benchmarks.py``) says which task
function it replaces, and ``prompts.py`` applies it. The reasons for each difference from lmms-eval's
built-in rendering are listed in ``prompts.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from llava_vitsplit.model.chat_templates import SHORT_ANSWER_PROMPT as SHORT_ANSWER

MULTIPLE_CHOICE = "\nAnswer with the option's letter from the given choices directly."
UNANSWERABLE = "\nWhen the provided information is insufficient, respond with 'Unanswerable'."
MMBENCH_OPTIONS = ("A", "B", "C", "D")  # model_vqa_mmbench.py reads these columns, up to the first blank
OPEN_ENDED_MAX_NEW_TOKENS = 1024  # MM-Vet and LLaVA-W: long answers, greedy, EOS only
PROMPT_STYLES = ("llava15", "task")

Renderer = Callable[[Callable, dict], str]  # (the task's doc_to_text, doc) -> question text


def with_kwargs(kwargs: dict) -> Renderer:
    """Render with the task's own ``doc_to_text`` and LLaVA-1.5's prompt kwargs."""
    return lambda doc_to_text, doc: doc_to_text(doc, dict(kwargs))


def is_blank(value) -> bool:
    """MMBench's "no value" cells: None, NaN, "nan" or empty text."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() in ("", "nan")


def mmbench_options(doc: dict) -> list[tuple[str, str]]:
    """``[(letter, text)]`` for the options of an MMBench row, up to the first blank one."""
    options = []
    for letter in MMBENCH_OPTIONS:
        if is_blank(doc.get(letter)):
            break
        options.append((letter, str(doc[letter])))
    return options


def mmbench_text(_doc_to_text: Callable, doc: dict) -> str:
    """LLaVA-1.5's MMBench prompt: hint line (if any), question, one "A. text" line per option, instruction."""
    question = doc["question"] if is_blank(doc.get("hint")) else f"{doc['hint']}\n{doc['question']}"
    for letter, text in mmbench_options(doc):
        question += f"\n{letter}. {text}"
    return question + MULTIPLE_CHOICE


def vizwiz_text(_doc_to_text: Callable, doc: dict) -> str:
    """The raw VizWiz question (no ``.capitalize()``) with LLaVA-1.5's two instructions."""
    return doc["question"] + UNANSWERABLE + SHORT_ANSWER


@dataclass(frozen=True)
class Protocol:
    """How LLaVA-1.5 asked one benchmark: question rendering and generation overrides."""

    render: Renderer
    max_new_tokens: int | None = None  # None: keep the task's
    spreadsheet: bool = False  # answers are written to an .xlsx submission (openpyxl refuses control chars)

"""LLaVA-1.5's evaluation protocol for the paper's benchmarks, applied by the ``llava_vitsplit`` model.

lmms-eval picks a task's prompt settings (``lmms_eval_specific_kwargs``) by model name and falls back to
``default``; built-in YAMLs have no ``llava_vitsplit`` entry, and several built-in renderings differ from
what LLaVA-1.5's evaluation scripts sent:

- VizWiz: ``vizwiz_vqa_doc_to_text`` calls ``.capitalize()`` ("Is it a Rose?" -> "Is it a rose?");
  LLaVA-1.5 kept the raw question.
- MMBench: lmms-eval joins hint, question and options with spaces and inserts "There are several
  options:"; LLaVA-1.5 (``model_vqa_mmbench.py``) put hint, question and each "A. text" option on their
  own lines.
- MM-Vet: the default adds a chain-of-thought preamble; LLaVA-1.5 asked the bare question.
- Stops: a task without ``until`` gets lmms-eval's default stop ``"\\n\\n"`` (MM-Vet answers are
  paragraphs and were cut), and several tasks stop at ``"ASSISTANT:"``; LLaVA-1.5 stopped at EOS only.

So the model re-renders the question (:func:`llava15_text`) and the generation settings
(:func:`llava15_generation`) for these tasks. Tasks are recognised by their ``doc_to_text`` function
(file under ``lmms_eval/tasks`` + name), so renamed or local copies of a task
(``!function lmms_eval.tasks.pope.utils.pope_doc_to_text``) get the same protocol. Unknown tasks keep
lmms-eval's prompt and settings. ``prompt_style=task`` in ``--model_args`` turns this off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llava_vitsplit.model.chat_templates import SHORT_ANSWER_PROMPT as SHORT_ANSWER

MULTIPLE_CHOICE = "\nAnswer with the option's letter from the given choices directly."
UNANSWERABLE = "\nWhen the provided information is insufficient, respond with 'Unanswerable'."
MMBENCH_OPTIONS = ("A", "B", "C", "D")  # model_vqa_mmbench.py reads these columns, up to the first blank
OPEN_ENDED_MAX_NEW_TOKENS = 1024  # MM-Vet and LLaVA-W: long answers, greedy, EOS only
PROMPT_STYLES = ("llava15", "task")

Renderer = Callable[[Callable, dict], str]  # (the task's doc_to_text, doc) -> question text


def _with_kwargs(kwargs: dict) -> Renderer:
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


# key: "<task folder>/<module file stem>.<doc_to_text function name>"
LLAVA15_PROTOCOLS: dict[str, Protocol] = {
    "vqav2/utils.vqav2_doc_to_text": Protocol(_with_kwargs({"pre_prompt": "", "post_prompt": SHORT_ANSWER})),
    "vizwiz_vqa/utils.vizwiz_vqa_doc_to_text": Protocol(vizwiz_text),
    "scienceqa/utils.sqa_doc_to_text": Protocol(
        _with_kwargs({"format": "default", "pre_prompt": "", "post_prompt": MULTIPLE_CHOICE})
    ),
    "pope/utils.pope_doc_to_text": Protocol(_with_kwargs({"pre_prompt": "", "post_prompt": SHORT_ANSWER})),
    "mmbench/en_utils.mmbench_doc_to_text": Protocol(mmbench_text, spreadsheet=True),
    "llava-in-the-wild/utils.llava_doc_to_text": Protocol(
        _with_kwargs({"pre_prompt": "", "post_prompt": ""}), max_new_tokens=OPEN_ENDED_MAX_NEW_TOKENS
    ),
    "mmvet/utils.doc_to_text": Protocol(
        _with_kwargs({"pre_prompt": "", "post_prompt": ""}), max_new_tokens=OPEN_ENDED_MAX_NEW_TOKENS
    ),
}


def function_key(fn: Callable) -> str | None:
    """``"<task folder>/<file stem>.<name>"`` for a function defined under ``lmms_eval/tasks``."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    path = Path(code.co_filename)
    parts = path.parts
    if "tasks" not in parts:
        return None
    index = len(parts) - 1 - parts[::-1].index("tasks")
    if index + 2 >= len(parts) or parts[index - 1] != "lmms_eval":
        return None
    folder = "/".join(parts[index + 1 : -1])
    return f"{folder}/{path.stem}.{fn.__name__}"


def task_doc_to_text(task) -> Callable | None:
    """The ``doc_to_text`` function of an lmms-eval Task object (None when it has none)."""
    doc_to_text = getattr(getattr(task, "config", None), "doc_to_text", None)
    return doc_to_text if callable(doc_to_text) else None


def llava15_protocol(task) -> Protocol | None:
    """LLaVA-1.5's protocol for ``task`` (an lmms-eval Task object), or None for tasks it did not run."""
    doc_to_text = task_doc_to_text(task)
    return None if doc_to_text is None else LLAVA15_PROTOCOLS.get(function_key(doc_to_text))


def llava15_text(task, doc: dict) -> str | None:
    """The question text of ``doc`` as LLaVA-1.5 asked it, or None to keep the task's own prompt.

    ``task`` is the lmms-eval Task object (the owner of the bound ``doc_to_visual``/``doc_to_messages``
    passed in each request).
    """
    protocol = llava15_protocol(task)
    return None if protocol is None else protocol.render(task_doc_to_text(task), doc)


def llava15_generation(task, gen_kwargs: dict) -> dict:
    """``gen_kwargs`` with LLaVA-1.5's settings for ``task``: no stop string but EOS, greedy open answers."""
    protocol = llava15_protocol(task)
    if protocol is None:
        return gen_kwargs
    settings = {**gen_kwargs, "until": []}
    if protocol.max_new_tokens is not None:
        settings.update(max_new_tokens=protocol.max_new_tokens, temperature=0, do_sample=False)
    return settings


def llava15_answer(task, answer: str) -> str:
    """``answer`` as the task can store it: control characters removed for spreadsheet submissions.

    MMBench's aggregation writes every answer to an .xlsx file; one control character in one answer
    makes it raise, and lmms-eval then writes no results file for any task of the run.
    """
    protocol = llava15_protocol(task)
    if protocol is None or not protocol.spreadsheet:
        return answer
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # what openpyxl refuses in a cell

    return ILLEGAL_CHARACTERS_RE.sub("", answer)

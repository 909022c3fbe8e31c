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
(file under ``lmms_eval/tasks`` + name, the ``prompt`` of each entry of the benchmark table,
``benchmarks.py``; the renderers are in ``protocols.py``), so renamed or local copies of a task
(``!function lmms_eval.tasks.pope.utils.pope_doc_to_text``) get the same protocol. Unknown tasks keep
lmms-eval's prompt and settings. ``prompt_style=task`` in ``--model_args`` turns this off.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llava_vitsplit.lmms_eval_plugin.benchmarks import protocol_for
from llava_vitsplit.lmms_eval_plugin.protocols import (
    MULTIPLE_CHOICE,
    PROMPT_STYLES,
    SHORT_ANSWER,
    Protocol,
)

__all__ = [  # the constants are re-exported for the model and the tests
    "MULTIPLE_CHOICE",
    "PROMPT_STYLES",
    "SHORT_ANSWER",
    "function_key",
    "llava15_answer",
    "llava15_generation",
    "llava15_protocol",
    "llava15_text",
]


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
    return None if doc_to_text is None else protocol_for(function_key(doc_to_text))


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

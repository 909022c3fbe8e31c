"""LLaVA-1.5's prompt conventions for the paper's benchmarks, applied by the ``llava_vitsplit`` model.

lmms-eval picks a task's prompt settings (``lmms_eval_specific_kwargs``) by model name and falls back to
``default``; built-in YAMLs have no ``llava_vitsplit`` entry, and some defaults differ from what
LLaVA-1.5 used (MM-Vet's default adds a chain-of-thought preamble; MMBench's adds an extra blank line).
So the model re-renders the question with the task's own ``doc_to_text`` function and the kwargs below.
Tasks are recognised by that function (file under ``lmms_eval/tasks`` + name), so renamed or local
copies of a task (``!function lmms_eval.tasks.pope.utils.pope_doc_to_text``) get the same prompts.
Unknown tasks keep lmms-eval's prompt. ``prompt_style=task`` in ``--model_args`` turns this off.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
MULTIPLE_CHOICE = "\nAnswer with the option's letter from the given choices directly."
UNANSWERABLE = "\nWhen the provided information is insufficient, respond with 'Unanswerable'."

# key: "<task folder>/<module file stem>.<doc_to_text function name>"
LLAVA15_PROMPTS: dict[str, dict] = {
    "vqav2/utils.vqav2_doc_to_text": {"pre_prompt": "", "post_prompt": SHORT_ANSWER},
    "vizwiz_vqa/utils.vizwiz_vqa_doc_to_text": {"pre_prompt": "", "post_prompt": UNANSWERABLE + SHORT_ANSWER},
    "scienceqa/utils.sqa_doc_to_text": {
        "format": "default",
        "pre_prompt": "",
        "post_prompt": MULTIPLE_CHOICE,
    },
    "pope/utils.pope_doc_to_text": {"pre_prompt": "", "post_prompt": SHORT_ANSWER},
    # mmbench_doc_to_text inserts its own "\n" before post_prompt
    "mmbench/en_utils.mmbench_doc_to_text": {"pre_prompt": "", "post_prompt": MULTIPLE_CHOICE.lstrip("\n")},
    "llava-in-the-wild/utils.llava_doc_to_text": {"pre_prompt": "", "post_prompt": ""},
    "mmvet/utils.doc_to_text": {"pre_prompt": "", "post_prompt": ""},
}
PROMPT_STYLES = ("llava15", "task")


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


def llava15_kwargs(doc_to_text: Callable) -> dict | None:
    """LLaVA-1.5's prompt kwargs for a task whose ``doc_to_text`` is ``doc_to_text`` (None if unknown)."""
    key = function_key(doc_to_text)
    return dict(LLAVA15_PROMPTS[key]) if key in LLAVA15_PROMPTS else None


def llava15_text(task, doc: dict) -> str | None:
    """The question text of ``doc`` with LLaVA-1.5's prompt, or None to keep the task's own prompt.

    ``task`` is the lmms-eval Task object (the owner of the bound ``doc_to_visual``/``doc_to_messages``
    passed in each request).
    """
    config = getattr(task, "config", None)
    doc_to_text = getattr(config, "doc_to_text", None)
    if not callable(doc_to_text):
        return None
    kwargs = llava15_kwargs(doc_to_text)
    return None if kwargs is None else doc_to_text(doc, kwargs)

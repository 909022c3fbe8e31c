"""The paper's (LLaVA-1.5's) figures recomputed from lmms-eval's logged samples, where lmms-eval scores differently.

- POPE: LLaVA's ``eval_pope.py`` maps an answer to "no" when its first sentence has the word "No", "no"
  or "not", else "yes", and reports the yes-ratio of the *predictions*; lmms-eval compares the raw
  lowercased answer with "yes"/"no" and its ``pope_yes_ratio`` is the ground truth's yes-ratio.
- ScienceQA: LLaVA's ``eval_science_qa.py`` accepts an answer that is exactly an option letter, starts
  with "X. ", or contains one "The answer is X."; lmms-eval accepts any case ("a") and "X." without the
  space, and not the "The answer is X." form.
- MMBench: a question counts only if the answer to every circular rotation of its options (the rows
  whose ``index`` agrees modulo 1e6) is right. Answers are matched to a letter by the MMBench
  evaluator's heuristics (lmms-eval's ``MMBench_Evaluator.can_infer``); where they fail lmms-eval asks a
  GPT judge and, when the judge fails, scores a *random* letter. Here such questions are counted and
  no figure is given while any remain.
- Judged benchmarks: LLaVA-W records a failed judge call as scores ``[-1, -1]`` (a run where every call
  failed reports 100), MM-Vet as score 0 with an empty ``eval_model``. ``*_judge_failures`` count them.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from llava_vitsplit.lmms_eval_plugin.protocols import MMBENCH_OPTIONS, is_blank

CIRCULAR_INDEX_BASE = 1_000_000  # MMBench rotation rows have index + k * 1e6


def response_text(sample: dict) -> str:
    response = sample.get("filtered_resps", "")
    if isinstance(response, list):
        response = response[0] if response else ""
    return str(response)


def llava_pope_label(answer: str) -> str:
    """LLaVA's ``eval_pope.py`` reading of an answer: "no" if its first sentence says no/not, else "yes"."""
    first_sentence = answer.split(".")[0] if "." in answer else answer
    words = first_sentence.replace(",", "").split(" ")
    return "no" if {"No", "no", "not"} & set(words) else "yes"


@dataclass(frozen=True)
class PopeScores:
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float  # of the predictions


def pope_scores(samples: list[dict]) -> PopeScores:
    """LLaVA-1.5's POPE metrics from samples (``target`` = "yes"/"no", the answer in ``filtered_resps``)."""
    if not samples:
        raise ValueError("POPE: no samples to score")
    predictions = [llava_pope_label(response_text(s)) == "yes" for s in samples]
    truths = [str(s["target"]).strip().lower() == "yes" for s in samples]
    tp = sum(p and t for p, t in zip(predictions, truths, strict=True))
    fp = sum(p and not t for p, t in zip(predictions, truths, strict=True))
    fn = sum(t and not p for p, t in zip(predictions, truths, strict=True))
    correct = sum(p == t for p, t in zip(predictions, truths, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PopeScores(correct / len(samples), precision, recall, f1, sum(predictions) / len(samples))


_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def llava_sqa_letter(answer: str) -> str | None:
    """The option letter LLaVA's ``eval_science_qa.py`` reads from an answer (None: "FAILED")."""
    if len(answer) == 1 and answer in string.ascii_uppercase:
        return answer
    if len(answer) >= 3 and answer[0] in string.ascii_uppercase and answer[1:3] == ". ":
        return answer[0]
    found = _ANSWER_IS.findall(answer)
    return found[0] if len(found) == 1 else None


def sqa_accuracy(samples: list[dict]) -> float:
    """LLaVA-1.5's ScienceQA accuracy from samples (``target`` = the right letter)."""
    if not samples:
        raise ValueError("ScienceQA: no samples to score")
    hits = [llava_sqa_letter(response_text(s)) == str(s["target"]).strip() for s in samples]
    return sum(hits) / len(hits)


@dataclass(frozen=True)
class MMBenchScores:
    circular: float | None  # None while some questions need the judge
    single_pass: float | None  # first rotation only (index < 1e6); None likewise
    questions: int
    need_judge: int  # questions with an answer the heuristics cannot map to a letter (and none wrong)


def _matched_letter(row: dict) -> str | None:
    from lmms_eval.tasks.mmbench.mmbench_evals import MMBench_Evaluator

    choices = {letter: str(row[letter]) for letter in MMBENCH_OPTIONS if not is_blank(row.get(letter))}
    letter = MMBench_Evaluator().can_infer(str(row["prediction"]), choices)
    return letter or None


def _question_outcome(rows: list[dict]) -> int | None:
    """1 if every rotation is right, 0 if any matched answer is wrong, None if one needs the judge."""
    letters = [_matched_letter(row) for row in rows]
    if any(letter is not None and letter != row["answer"] for letter, row in zip(letters, rows, strict=True)):
        return 0
    return None if None in letters else 1


def mmbench_scores(samples: list[dict]) -> MMBenchScores:
    """Circular (all rotations right) and single-pass accuracy from MMBench samples' ``gpt_eval_score``."""
    rows = [s["gpt_eval_score"] for s in samples if isinstance(s.get("gpt_eval_score"), dict)]
    if not rows:
        raise ValueError("MMBench: the samples carry no 'gpt_eval_score' records to score")
    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(int(row["index"]) % CIRCULAR_INDEX_BASE, []).append(row)
    outcomes = [_question_outcome(group) for group in groups.values()]
    firsts = [_question_outcome([r]) for r in rows if int(r["index"]) < CIRCULAR_INDEX_BASE]
    need_judge = outcomes.count(None)
    circular = None if need_judge else sum(outcomes) / len(outcomes)
    single = None if None in firsts or not firsts else sum(firsts) / len(firsts)
    return MMBenchScores(circular, single, len(groups), need_judge)


def llava_wild_judge_failures(samples: list[dict]) -> tuple[int, int]:
    """``(failed, judged)`` judge calls in LLaVA-W samples (a failed call is scored ``[-1, -1]``)."""
    records = [r for r in (s.get("gpt_eval_llava_all") for s in samples) if isinstance(r, dict)]
    return sum(-1 in list(r.get("scores", [])[:2]) for r in records), len(records)


def mmvet_judge_failures(samples: list[dict]) -> tuple[int, int]:
    """``(failed, judged)`` judge calls in MM-Vet samples (a failed call has an empty ``eval_model``)."""
    records = [r for r in (s.get("gpt_eval_score") for s in samples) if isinstance(r, dict)]
    return sum(not r.get("eval_model") for r in records), len(records)

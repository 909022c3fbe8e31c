"""Do the quickstart models look at the image for yes/no questions, or answer from the wording?

easy-vqa's yes/no answers follow their phrasing (``is there a <color> shape?`` is mostly "no"). This
script derives that text-only prior from the *unbalanced* train questions (the majority answer of each
phrasing) and, for each quickstart run given, reports its yes/no accuracy, the prior's accuracy on the
same questions, and how many of the run's yes/no answers equal the prior's. A run that answers exactly
as the prior does is not using the image for yes/no questions.

    .venv/bin/python bench/quickstart_yes_no_prior.py checkpoints/quickstart \\
        checkpoints/quickstart/compare-mlp checkpoints/quickstart/compare-blind
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from llava_vitsplit.quickstart import easy_vqa_source
from llava_vitsplit.quickstart.easy_vqa_task import normalize_answer
from llava_vitsplit.quickstart.report import model_answer, read_eval


def text_prior() -> dict[str, str]:
    """Majority answer of each yes/no phrasing over all train questions."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for qa in easy_vqa_source.load_split("train").questions:
        if qa.answer in ("yes", "no"):
            counts[easy_vqa_source.phrasing(qa.question)][qa.answer] += 1
    return {text: c.most_common(1)[0][0] for text, c in counts.items()}


def run_task(run: Path) -> str:
    """The lmms-eval task a quickstart run evaluated (from its evaluate stamp)."""
    return json.loads((run / "steps" / "evaluate.json").read_text())["settings"]["task"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="quickstart run folders (with eval/ and steps/)")
    args = parser.parse_args()
    prior = text_prior()
    print("| run | yes/no questions | run correct | prior correct | run answer == prior |")
    print("| --- | --- | --- | --- | --- |")
    for run in args.runs:
        result = read_eval(run / "eval", run_task(run))
        rows = []
        for sample in result.samples:
            target = normalize_answer(str(sample["target"]))
            if target in ("yes", "no"):
                question = sample["input"].split("\n")[0]
                rows.append(
                    (
                        target,
                        normalize_answer(model_answer(sample)),
                        prior[easy_vqa_source.phrasing(question)],
                    )
                )
        n = len(rows)
        right = sum(t == a for t, a, _ in rows)
        prior_right = sum(t == p for t, _, p in rows)
        same = sum(a == p for _, a, p in rows)
        print(
            f"| {run} | {n} | {right} ({100 * right / n:.1f}%) | {prior_right} | {same} ({100 * same / n:.1f}%) |"
        )


if __name__ == "__main__":
    main()

"""The paper's benchmarks, one entry each: the one place that says what a benchmark is.

A :class:`BenchmarkSpec` holds everything keyed by benchmark: its script (``eval/<script>.sh``, run by
``eval/all.sh`` in table order, the GPT-judged ones last), the built-in lmms-eval functions that identify
its tasks in a results file (``results.py``; local and renamed copies count), the ``doc_to_text`` whose
prompt LLaVA-1.5 asked differently and how (``prompts.py``), how its figure is recomputed from the logged
samples where lmms-eval scores differently (``rescore``) or checked for failed judge calls
(``judge_failures``), and its rows of the paper's Table 4 with the published figures
(``eval/collect_results.py``). Adding a benchmark is one :func:`register_benchmark` call (or one entry
here) plus its script.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from llava_vitsplit.lmms_eval_plugin import paper_scores
from llava_vitsplit.lmms_eval_plugin.protocols import (
    MULTIPLE_CHOICE,
    OPEN_ENDED_MAX_NEW_TOKENS,
    SHORT_ANSWER,
    Protocol,
    mmbench_text,
    vizwiz_text,
    with_kwargs,
)


@dataclass(frozen=True)
class Row:
    """One line of the comparison table, with the paper's Table 4 figures (LLaVA-1.5-7B, + ViT-Split)."""

    label: str
    metric: str  # lmms-eval metric key, without the ",none" filter suffix
    scale: float  # multiply to get percent
    llava15: float | None  # None: the paper has no figure for this split
    vitsplit: float | None
    variant: str | None = None  # the task variant shown (POPE split, MMBench split); None: any
    paper_split: str = ""  # split the paper's figure is on (its runs are preferred)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str  # the benchmark's key (a results-file task maps to it)
    script: str  # eval/<script>.sh; its task variables and defaults are in the script
    functions: tuple[str, ...]  # built-in function names in a task config that identify it
    rows: tuple[Row, ...]
    prompt: tuple[str, Protocol] | None = None  # ("<task folder>/<file stem>.<doc_to_text>", protocol)
    rescore: Callable[[list[dict]], str] | None = None  # samples -> the paper protocol's cell
    judge_failures: Callable[[list[dict]], tuple[int, int]] | None = None  # GPT-judged: (failed, judged)
    variants: dict[str, str] = field(default_factory=dict)  # word of a task name or split -> variant

    @property
    def judged(self) -> bool:
        """Scored by a GPT judge: ``eval/all.sh`` runs it only with a key or ``--judge none``."""
        return self.judge_failures is not None


BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add ``spec`` to the table (a name, function or prompt already claimed is an error)."""
    if spec.name in BENCHMARKS:
        raise ValueError(f"benchmark {spec.name!r} is already registered")
    for other in BENCHMARKS.values():
        if set(spec.functions) & set(other.functions):
            raise ValueError(f"benchmark {spec.name!r}: functions {spec.functions} overlap {other.name!r}'s")
        if spec.prompt and other.prompt and spec.prompt[0] == other.prompt[0]:
            raise ValueError(f"benchmark {spec.name!r}: prompt {spec.prompt[0]!r} is {other.name!r}'s")
    BENCHMARKS[spec.name] = spec
    return spec


def benchmark_by_function(name: str | None) -> BenchmarkSpec | None:
    """The benchmark whose task configs use the built-in function ``name``."""
    return next((spec for spec in BENCHMARKS.values() if name in spec.functions), None)


def protocol_for(function_key: str | None) -> Protocol | None:
    """LLaVA-1.5's protocol for a task whose ``doc_to_text`` is ``function_key`` (None: keep the task's)."""
    return next((s.prompt[1] for s in BENCHMARKS.values() if s.prompt and s.prompt[0] == function_key), None)


def table_rows() -> list[tuple[BenchmarkSpec, Row]]:
    """Every row of the comparison table, in table order."""
    return [(spec, row) for spec in BENCHMARKS.values() for row in spec.rows]


def scripts(judged: bool) -> list[str]:
    """The ``eval/`` scripts of the (un)judged benchmarks, in table order (what ``eval/all.sh`` runs)."""
    return [spec.script for spec in BENCHMARKS.values() if spec.judged == judged]


def _short_answer() -> Protocol:
    return Protocol(with_kwargs({"pre_prompt": "", "post_prompt": SHORT_ANSWER}))


def _open_ended() -> Protocol:
    return Protocol(
        with_kwargs({"pre_prompt": "", "post_prompt": ""}), max_new_tokens=OPEN_ENDED_MAX_NEW_TOKENS
    )


def sqa_cell(samples: list[dict]) -> str:
    return f"{paper_scores.sqa_accuracy(samples) * 100:.1f}"


def pope_cell(samples: list[dict]) -> str:
    scores = paper_scores.pope_scores(samples)
    return f"{scores.f1 * 100:.1f} (yes-ratio {scores.yes_ratio * 100:.1f}%)"


def mmbench_cell(samples: list[dict]) -> str:
    scores = paper_scores.mmbench_scores(samples)
    if scores.circular is None:
        return f"{scores.need_judge} of {scores.questions} questions need the judge"
    return f"{scores.circular * 100:.1f} circular ({scores.single_pass * 100:.1f} single pass)"


for _spec in (
    BenchmarkSpec(
        "vqav2",
        "vqav2",
        ("vqav2_process_results_test", "vqav2_process_results_val", "vqav2_doc_to_text"),
        (Row("VQAv2 (test-dev)", "exact_match", 100, 78.5, 78.2, paper_split="test"),),
        prompt=("vqav2/utils.vqav2_doc_to_text", _short_answer()),
    ),
    BenchmarkSpec(
        "vizwiz",
        "vizwiz",
        ("vizwiz_vqa_process_results", "vizwiz_vqa_doc_to_text"),
        (Row("VizWiz (test-dev)", "exact_match", 100, 50.0, 51.7, paper_split="test"),),
        prompt=("vizwiz_vqa/utils.vizwiz_vqa_doc_to_text", Protocol(vizwiz_text)),
    ),
    BenchmarkSpec(
        "llava_wild",
        "llava_wild",
        ("llava_process_results", "llava_doc_to_text"),
        (Row("LLaVA-in-the-Wild", "gpt_eval_llava_all", 1, 65.4, 71.1),),
        prompt=("llava-in-the-wild/utils.llava_doc_to_text", _open_ended()),
        judge_failures=paper_scores.llava_wild_judge_failures,
    ),
    BenchmarkSpec(
        "scienceqa",
        "sqa",
        ("sqa_process_results", "sqa_doc_to_text"),
        (Row("ScienceQA-IMG", "exact_match", 100, 66.8, 70.4),),
        prompt=(
            "scienceqa/utils.sqa_doc_to_text",
            Protocol(with_kwargs({"format": "default", "pre_prompt": "", "post_prompt": MULTIPLE_CHOICE})),
        ),
        rescore=sqa_cell,
    ),
    BenchmarkSpec(
        "mmvet",
        "mmvet",
        ("mmvet_process_results", "mmvet_doc_to_visual"),
        (Row("MM-Vet", "gpt_eval_score", 1, 31.1, 31.2),),
        prompt=("mmvet/utils.doc_to_text", _open_ended()),
        judge_failures=paper_scores.mmvet_judge_failures,
    ),
    BenchmarkSpec(
        "pope",
        "pope",
        ("pope_process_results", "pope_doc_to_text"),
        (
            Row("POPE random (F1)", "pope_f1_score", 100, 87.3, 88.5, variant="random"),
            Row("POPE popular (F1)", "pope_f1_score", 100, 86.2, 87.4, variant="popular"),
            Row("POPE adversarial (F1)", "pope_f1_score", 100, 84.2, 86.1, variant="adversarial"),
        ),
        prompt=("pope/utils.pope_doc_to_text", _short_answer()),
        rescore=pope_cell,
        # built-in tasks pope_random / pope_pop / pope_adv
        variants={
            "random": "random",
            "pop": "popular",
            "popular": "popular",
            "adv": "adversarial",
            "adversarial": "adversarial",
        },  # fmt: skip
    ),
    BenchmarkSpec(
        "mmbench",
        "mmbench",
        ("mmbench_process_results", "mmbench_doc_to_text"),
        (
            Row("MMBench-EN (test)", "gpt_eval_score", 1, 64.3, 66.4, variant="test", paper_split="test"),
            Row("MMBench-EN (dev)", "gpt_eval_score", 1, None, None, variant="dev"),
        ),
        prompt=("mmbench/en_utils.mmbench_doc_to_text", Protocol(mmbench_text, spreadsheet=True)),
        rescore=mmbench_cell,
    ),
):
    register_benchmark(_spec)


def main(argv: list[str] | None = None) -> int:
    """``python -m llava_vitsplit.lmms_eval_plugin.benchmarks scripts``: what ``eval/all.sh`` runs.

    Prints two lines: the scripts of the benchmarks scored without a judge, then the GPT-judged ones.
    """
    import sys

    if (sys.argv[1:] if argv is None else argv) != ["scripts"]:
        print("usage: python -m llava_vitsplit.lmms_eval_plugin.benchmarks scripts", file=sys.stderr)
        return 2
    print(" ".join(scripts(judged=False)))
    print(" ".join(scripts(judged=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Collect lmms-eval results into a markdown table next to the paper's Table 4 (LLaVA-1.5-7B, + ViT-Split).

usage: python eval/collect_results.py RESULTS_DIR_OR_FILE [...] [--output table.md] [--newer-than FILE]

Results files are found by their content (``results`` + ``configs``; MMBench's detail file
``submissions/mmbench_en_dev_results.json`` is listed as a submission file), and each task is mapped
to its paper benchmark by the built-in functions its config uses, so local and renamed tasks count. The
rows, the paper's figures and the rescoring come from the benchmark table
(``llava_vitsplit/lmms_eval_plugin/benchmarks.py``).
For each benchmark the newest run wins, a test split over a val split. Two figures are shown:
lmms-eval's, and the paper protocol's, recomputed from the logged samples where lmms-eval scores
differently (POPE yes-ratio of the predictions, MMBench circular evaluation without random guesses).
A failed GPT judge call is an error (exit 1), never a score; runs made with ``--judge none``
(lmms-eval's ``--predict_only``) show "not scored". Exit 2: bad input or no results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava_vitsplit.lmms_eval_plugin.benchmarks import BenchmarkSpec, Row, table_rows
from llava_vitsplit.lmms_eval_plugin.results import (
    TaskRun,
    find_results_files,
    read_samples,
    submission_files,
    task_runs,
)
from llava_vitsplit.util.atomic import write_atomic

HEADER = (
    "| Benchmark | lmms-eval task | lmms-eval | Paper protocol (from samples) | LLaVA-1.5-7B (paper) "
    "| + ViT-Split (paper) |\n|---|---|---:|---:|---:|---:|"
)


def run_for(spec: BenchmarkSpec, row: Row, runs: list[TaskRun]) -> TaskRun | None:
    """The run shown in ``row``: the newest, preferring the paper's split."""
    mine = [r for r in runs if r.benchmark == spec.name and row.variant in (None, r.variant)]
    if not mine:
        return None
    return max(mine, key=lambda r: (r.submission_only == bool(row.paper_split), r.date, str(r.results_file)))


def metric_value(metrics: dict, metric: str) -> float | None:
    for key in (f"{metric},none", metric):
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def lmms_eval_cell(row: Row, run: TaskRun) -> str:
    if run.predict_only:
        return "not scored (--judge none)"
    if run.submission_only:
        return "test server (see submissions/)"
    value = metric_value(run.metrics, row.metric)
    if value is None:
        return "no score"
    suffix = " (val, not test-dev)" if row.paper_split == "test" else ""
    return f"{value * row.scale:.1f}{suffix}"


def paper_cell(spec: BenchmarkSpec, run: TaskRun) -> tuple[str, str | None]:
    """(cell, error) for the paper-protocol column; ``error`` names a failed judge."""
    if run.predict_only or run.submission_only:
        return "", None
    if spec.rescore is None and spec.judge_failures is None:
        return "= lmms-eval", None
    if run.samples_file is None:
        return "no samples (run with --log_samples)", None
    samples = read_samples(run.samples_file)
    if spec.judge_failures is not None:
        failed, judged = spec.judge_failures(samples)
        if failed:
            return (
                f"ERROR: judge failed on {failed} of {judged}",
                f"{run.task}: {failed} of {judged} judge calls failed",
            )
        return "= lmms-eval", None
    return spec.rescore(samples), None


def paper_figure(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def table(runs: list[TaskRun], only_run: bool = False) -> tuple[str, list[str]]:
    """(markdown table, errors); ``only_run`` leaves out the benchmarks with no run."""
    lines, errors = [HEADER], []
    for spec, row in table_rows():
        run = run_for(spec, row, runs)
        if run is None:
            if not only_run:
                lines.append(
                    f"| {row.label} | | not run | | {paper_figure(row.llava15)} | {paper_figure(row.vitsplit)} |"
                )
            continue
        paper, error = paper_cell(spec, run)
        errors += [error] if error else []
        cells = [row.label, run.task, lmms_eval_cell(row, run), paper]
        cells += [paper_figure(row.llava15), paper_figure(row.vitsplit)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", errors


def report(paths: list[str], newer_than: float | None) -> tuple[str, list[str]]:
    files = find_results_files(paths, newer_than)
    if not files:
        raise FileNotFoundError(f"no lmms-eval results file under {', '.join(paths)}")
    runs = [run for path in files for run in task_runs(path)]
    text, errors = table(runs, only_run=newer_than is not None)
    other = sorted({r.task for r in runs if r.benchmark is None})
    if other:
        text += "\nNot paper benchmarks (not in the table): " + ", ".join(other) + "\n"
    text += "\nResults files: " + ", ".join(f"`{p}`" for p in files) + "\n"
    newer = [p for p in submission_files(paths) if newer_than is None or p.stat().st_mtime > newer_than]
    if newer:
        text += "\nSubmission and detail files (upload the test-split ones to their servers):\n"
        text += "".join(f"- `{p}`\n" for p in newer)
    return text, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="lmms-eval output folders or results files")
    parser.add_argument("--output", help="also write the table to this markdown file")
    parser.add_argument("--newer-than", help="only results written after this file was (one script's run)")
    args = parser.parse_args(argv)
    try:
        newer_than = Path(args.newer_than).stat().st_mtime if args.newer_than else None
        text, errors = report(args.paths, newer_than)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"collect_results: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    if args.output:
        write_atomic(Path(args.output), lambda tmp: tmp.write_text(text))
    for error in errors:
        print(f"collect_results: error: {error}; no score is reported for it", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

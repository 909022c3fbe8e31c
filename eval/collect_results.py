"""Collect lmms-eval result JSONs into a markdown table next to the paper's Table 4 (LLaVA-1.5-7B).

usage: python eval/collect_results.py RESULTS_DIR_OR_FILE [...] [--output table.md]

Every ``*_results.json`` under the given paths is read; for each task the newest result wins. Scores are
shown on the paper's scale (percent). Test-split tasks (VQAv2, VizWiz, MMBench test) are scored by
their test servers, so their rows point at the submission files instead of a number.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    benchmark: str
    tasks: tuple[str, ...]  # lmms-eval task names, preferred first
    metric: str  # metric key in results JSON, without the ",none" filter suffix
    scale: float  # multiply to get percent
    llava15: float  # paper Table 4, LLaVA-1.5-7B
    vitsplit: float  # paper Table 4, + ViT-Split
    server: bool = False  # the preferred task is scored by a test server


ROWS = (
    Row("VQAv2 (test-dev)", ("vqav2_test", "vqav2_val"), "exact_match", 100, 78.5, 78.2, server=True),
    Row(
        "VizWiz (test-dev)",
        ("vizwiz_vqa_test", "vizwiz_vqa_val"),
        "exact_match",
        100,
        50.0,
        51.7,
        server=True,
    ),
    Row("LLaVA-in-the-Wild", ("llava_in_the_wild",), "gpt_eval_llava_all", 1, 65.4, 71.1),
    Row("ScienceQA-IMG", ("scienceqa_img",), "exact_match", 100, 66.8, 70.4),
    Row("MM-Vet", ("mmvet",), "gpt_eval_score", 1, 31.1, 31.2),
    Row("POPE random (F1)", ("pope_random",), "pope_f1_score", 100, 87.3, 88.5),
    Row("POPE popular (F1)", ("pope_pop",), "pope_f1_score", 100, 86.2, 87.4),
    Row("POPE adversarial (F1)", ("pope_adv",), "pope_f1_score", 100, 84.2, 86.1),
    Row("MMBench-EN", ("mmbench_en_dev", "mmbench_en_test"), "gpt_eval_score", 1, 64.3, 66.4),
)
TEST_SERVER_TASKS = {"vqav2_test", "vizwiz_vqa_test", "mmbench_en_test"}


def find_result_files(paths: list[str]) -> list[Path]:
    files = []
    for name in paths:
        path = Path(name)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(path.rglob("*_results.json")))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


def latest_results(files: list[Path]) -> dict[str, tuple[dict, Path]]:
    """task -> (metrics, file) from the newest file (by the ``date`` field, then the name) per task."""
    loaded = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        if "results" not in data:
            raise ValueError(f"{path}: no 'results' field; is this an lmms-eval results file?")
        loaded.append((str(data.get("date", "")), str(path), data, path))
    by_task: dict[str, tuple[dict, Path]] = {}
    for _, _, data, path in sorted(loaded, key=lambda item: (item[0], item[1])):
        for task, metrics in data["results"].items():
            by_task[task] = (metrics, path)
    return by_task


def metric_value(metrics: dict, metric: str) -> float | None:
    for key in (f"{metric},none", metric):
        value = metrics.get(key)
        if isinstance(value, int | float):
            return float(value)
    return None


def table(by_task: dict[str, tuple[dict, Path]]) -> str:
    lines = [
        "| Benchmark | lmms-eval task | This run | LLaVA-1.5-7B (paper) | + ViT-Split (paper) |",
        "|---|---|---:|---:|---:|",
    ]
    for row in ROWS:
        task = next((t for t in row.tasks if t in by_task), None)
        if task is None:
            cell, task_cell = "not run", " / ".join(row.tasks)
        elif task in TEST_SERVER_TASKS:
            cell, task_cell = "test server (see submissions/)", task
        else:
            value = metric_value(by_task[task][0], row.metric)
            cell = "no score" if value is None else f"{value * row.scale:.1f}"
            task_cell = task
            if row.server:
                cell += " (val, not test-dev)"
        lines.append(f"| {row.benchmark} | {task_cell} | {cell} | {row.llava15:.1f} | {row.vitsplit:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="lmms-eval output folders or *_results.json files")
    parser.add_argument("--output", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    try:
        files = find_result_files(args.paths)
        if not files:
            raise FileNotFoundError(f"no *_results.json under {', '.join(args.paths)}")
        by_task = latest_results(files)
    except (FileNotFoundError, ValueError) as exc:
        print(f"collect_results: {exc}", file=sys.stderr)
        return 2
    text = table(by_task)
    sources = sorted({str(path) for _, path in by_task.values()})
    text += "\nSources: " + ", ".join(f"`{s}`" for s in sources) + "\n"
    sys.stdout.write(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

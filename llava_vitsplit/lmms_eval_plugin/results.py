"""Read an lmms-eval output folder: results files found by their content, tasks mapped to paper benchmarks.

lmms-eval writes ``<model>/<date>_results.json`` (with ``results`` and ``configs`` mappings) and
``<model>/<date>_samples_<task>.jsonl`` per task (``--log_samples``); task aggregations also write
detail and submission files under ``submissions/`` (e.g. MMBench's ``mmbench_en_dev_results.json``),
which are not results files whatever their name. A task is mapped to its paper benchmark by the
functions in its config (``process_results`` / ``doc_to_text``; the benchmark table, ``benchmarks.py``), so local and renamed copies of a
built-in task (``!function lmms_eval.tasks.pope.utils.pope_process_results``) count as that benchmark.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from llava_vitsplit.lmms_eval_plugin.benchmarks import BENCHMARKS, benchmark_by_function

FUNCTION_FIELDS = ("process_results", "doc_to_text", "doc_to_visual")
_FUNCTION_REPR = re.compile(r"<function (\w+) at ")


@dataclass(frozen=True)
class TaskRun:
    """One task's entry in one lmms-eval results file."""

    task: str
    benchmark: str | None  # its key in the benchmark table, None for other tasks
    variant: str  # the spec's variant named in the task or split (POPE), else the test split
    metrics: dict
    results_file: Path
    date: str

    @property
    def samples_file(self) -> Path | None:
        stem = self.results_file.name.removesuffix("_results.json")
        path = self.results_file.with_name(f"{stem}_samples_{self.task}.jsonl")
        return path if path.is_file() else None

    @property
    def predict_only(self) -> bool:
        """lmms-eval ran with ``--predict_only``: answers logged, nothing scored."""
        return any(key.split(",")[0] == "bypass" for key in self.metrics)

    @property
    def submission_only(self) -> bool:
        """A test split scored by a server: a ``submission`` metric and no numeric score."""
        names = {key.split(",")[0] for key in self.metrics}
        return "submission" in names and not any(is_score(k, v) for k, v in self.metrics.items())


def is_score(key: str, value) -> bool:
    """A metric entry holding a number (not a standard error, not an empty aggregation)."""
    return "_stderr" not in key and isinstance(value, int | float) and not isinstance(value, bool)


def function_name(value) -> str | None:
    """``"<function pope_doc_to_text at 0x..>"`` (as lmms-eval logs configs) -> ``"pope_doc_to_text"``."""
    match = _FUNCTION_REPR.match(str(value))
    return match.group(1) if match else None


def benchmark_of(config: dict) -> str | None:
    """The paper benchmark whose built-in functions the task config uses (None if none)."""
    for field in FUNCTION_FIELDS:
        spec = benchmark_by_function(function_name(config.get(field)))
        if spec is not None:
            return spec.name
    return None


def variant_of(task: str, benchmark: str | None, config: dict) -> str:
    split = str(config.get("test_split", "")).strip()
    variants = BENCHMARKS[benchmark].variants if benchmark in BENCHMARKS else {}
    words = [split, *re.split(r"[_\-\s]+", task)]  # a variant named by the split or a word of the task
    return next((variants[word] for word in words if word in variants), split)


def is_results_file(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("results"), dict) and "configs" in data


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def find_results_files(paths: list[str], newer_than: float | None = None) -> list[Path]:
    """lmms-eval results files under ``paths`` (by content; optionally modified after ``newer_than``)."""
    found = []
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        candidates = [path] if path.is_file() else sorted(path.rglob("*_results.json"))
        for candidate in candidates:
            if newer_than is not None and candidate.stat().st_mtime <= newer_than:
                continue
            if is_results_file(read_json(candidate)):
                found.append(candidate)
            elif "submissions" not in candidate.parts:  # there: task detail files (MMBench dev)
                raise ValueError(f"{candidate}: no 'results'/'configs' fields; not an lmms-eval results file")
    return found


def task_runs(path: Path) -> list[TaskRun]:
    data = read_json(path)
    configs = data.get("configs") or {}
    runs = []
    for task, metrics in data["results"].items():
        config = configs.get(task)
        if config is None:
            continue  # a group's summary row
        benchmark = benchmark_of(config)
        variant = variant_of(task, benchmark, config)
        runs.append(TaskRun(task, benchmark, variant, metrics, path, str(data.get("date", ""))))
    return runs


def read_samples(path: Path) -> list[dict]:
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                samples.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc})") from exc
    return samples


def submission_files(paths: list[str]) -> list[Path]:
    """Files under each ``submissions/`` folder (test-server uploads and task detail files)."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and "submissions" in p.parts)
    return files

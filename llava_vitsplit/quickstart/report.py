"""Read a quickstart run's lmms-eval output and print its accuracy, example answers and a comparison table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llava_vitsplit.quickstart.easy_vqa_task import TYPE_METRICS, normalize_answer


@dataclass
class EvalResult:
    """Accuracy (%) overall and per question type, the number of questions, and the logged samples."""

    task: str
    accuracy: float
    by_type: dict[str, float]
    num_questions: int
    samples: list[dict]


def read_eval(eval_dir: Path, task: str) -> EvalResult:
    """The newest ``*_results.json`` under ``eval_dir`` and its ``samples_<task>`` log."""
    results_files = sorted(Path(eval_dir).rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if not results_files:
        raise FileNotFoundError(f"no lmms-eval results under {eval_dir}")
    summary = json.loads(results_files[-1].read_text())
    if task not in summary.get("results", {}):
        raise KeyError(f"{results_files[-1]} has no results for task {task!r}")
    metrics = summary["results"][task]
    samples = [
        json.loads(line)
        for path in sorted(results_files[-1].parent.glob(f"*samples_{task}.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    return EvalResult(
        task=task,
        accuracy=float(metrics["accuracy,none"]),
        by_type={qtype: float(metrics[f"{metric},none"]) for qtype, metric in TYPE_METRICS.items()},
        num_questions=int(summary["n-samples"][task]["effective"]),
        samples=samples,
    )


def model_answer(sample: dict) -> str:
    """The model's reply in one lmms-eval sample record."""
    resp = sample.get("filtered_resps", sample.get("resps"))
    while isinstance(resp, list) and resp:
        resp = resp[0]
    return str(resp)


def test_docs(parquet_path: Path) -> list[dict]:
    """The task's test documents without images (lmms-eval's ``doc_id`` indexes this list)."""
    import pyarrow.parquet as pq

    return pq.read_table(
        str(parquet_path), columns=["question_id", "image_id", "question", "answer"]
    ).to_pylist()


def examples(result: EvalResult, docs: list[dict], count: int = 6) -> list[tuple[str, str, str, str]]:
    """``(image, question, expected, answered)`` for the first ``count`` samples, one per image."""
    rows, seen = [], set()
    for sample in sorted(result.samples, key=lambda s: s["doc_id"]):
        doc = docs[sample["doc_id"]]
        if doc["image_id"] in seen:
            continue
        seen.add(doc["image_id"])
        rows.append(
            (f"test/{doc['image_id']}.png", doc["question"], str(sample["target"]), model_answer(sample))
        )
        if len(rows) == count:
            break
    return rows


def format_report(result: EvalResult, docs: list[dict], checkpoint: Path, timings: dict[str, float]) -> str:
    by_type = ", ".join(f"{qtype} {acc:.1f}%" for qtype, acc in result.by_type.items())
    lines = [
        "",
        f"easy-vqa test accuracy: {result.accuracy:.1f}% on {result.num_questions} questions ({by_type})",
        "",
        "examples (image, question -> expected / model):",
    ]
    for image, question, expected, answered in examples(result, docs):
        mark = "ok " if normalize_answer(expected) == normalize_answer(answered) else "-- "
        lines.append(f"  {mark}{image}  {question} -> {expected} / model: {answered.strip()!r}")
    total = sum(v for k, v in timings.items() if not k.startswith("assets:"))
    lines += [
        "",
        "time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f" (total {total / 60:.1f} min)",
        f"checkpoint: {checkpoint}",
        f"chat with it:  make demo   (or: llava-vitsplit demo --model {checkpoint})",
    ]
    return "\n".join(lines)


def trainable_parameters(checkpoint: Path) -> tuple[int, int]:
    """Trainable parameters of the checkpoint's architecture in stage 1 (connector) and stage 2 (+ LLM)."""
    from llava_vitsplit.params import checkpoint_param_report

    stages = checkpoint_param_report(checkpoint)["stages"]
    return stages["pretrain"]["trainable"], stages["finetune"]["trainable"]


def comparison_table(rows: list[tuple[str, EvalResult, tuple[int, int], float]]) -> str:
    """Markdown table: variant, accuracy overall / per type, trainable parameters per stage, wall time."""
    header = (
        "| variant | test accuracy | yes/no | color | shape | questions "
        "| trainable stage 1 | trainable stage 2 | wall time |"
    )
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, result, (stage1, stage2), seconds in rows:
        t = result.by_type
        lines.append(
            f"| {name} | {result.accuracy:.1f}% | {t['yes/no']:.1f}% | {t['color']:.1f}% | {t['shape']:.1f}% | "
            f"{result.num_questions} | {stage1:,} | {stage2:,} | {seconds / 60:.1f} min |"
        )
    return "\n".join(lines)

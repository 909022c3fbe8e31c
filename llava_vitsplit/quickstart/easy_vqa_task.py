"""A local lmms-eval task over easy-vqa's test split: the task files and the functions its YAML names.

``write_task(dir, rows, image_folder)`` writes ``dir/easy_vqa_vitsplit/`` with ``test.parquet`` (questions
with the images embedded, readable by ``datasets`` as an ``Image`` feature) and ``easy_vqa_vitsplit.yaml``,
which lmms-eval 0.7.3 loads with ``--include_path dir --tasks easy_vqa_vitsplit`` (``dataset_path:
parquet``; relative ``data_files`` resolve next to the YAML). The YAML refers to the functions below by
absolute module path. Scoring is exact match after normalisation (case, punctuation, spaces), reported
overall and per question type (``yes/no``, ``color``, ``shape``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llava_vitsplit.model.chat_templates import SHORT_ANSWER_PROMPT as SHORT_ANSWER

TASK_NAME = "easy_vqa_vitsplit"  # not a built-in lmms-eval task name
BLIND_TASK_NAME = "easy_vqa_vitsplit_blind"  # same questions, every image replaced by one blank image
BLANK_RGB = (128, 128, 128)
BLANK_IMAGE_NAME = "blank.png"  # written into the image folder for the blind baseline's training data
PARQUET_NAME = "test.parquet"

_MODULE = "llava_vitsplit.quickstart.easy_vqa_task"
TYPE_METRICS = {"yes/no": "accuracy_yes_no", "color": "accuracy_color", "shape": "accuracy_shape"}

TASK_YAML = (
    f"""\
# lmms-eval task over easy-vqa's test split, written by `llava-vitsplit easy-vqa`.
task: {TASK_NAME}
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {PARQUET_NAME}
test_split: test
output_type: generate_until
doc_to_visual: !function {_MODULE}.doc_to_visual
doc_to_text: !function {_MODULE}.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 8
  temperature: 0
  top_p: 1.0
  num_beams: 1
  do_sample: false
process_results: !function {_MODULE}.process_results
metric_list:
  - metric: accuracy
    aggregation: !function {_MODULE}.aggregate_accuracy
    higher_is_better: true
"""
    + "".join(
        f"""  - metric: {metric}
    aggregation: !function {_MODULE}.aggregate_accuracy
    higher_is_better: true
"""
        for metric in TYPE_METRICS.values()
    )
    + f"""\
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: {json.dumps(SHORT_ANSWER)}
metadata:
  version: 1.0
"""
)


# The blind baseline's task: the same file and scoring, with a constant image (no visual information).
BLIND_TASK_YAML = TASK_YAML.replace(f"task: {TASK_NAME}", f"task: {BLIND_TASK_NAME}").replace(
    f"{_MODULE}.doc_to_visual", f"{_MODULE}.doc_to_visual_blind"
)


def task_files(task_root: Path) -> list[Path]:
    """The files :func:`write_task` writes under ``task_root``."""
    folder = task_root / TASK_NAME
    return [folder / f"{TASK_NAME}.yaml", folder / f"{BLIND_TASK_NAME}.yaml", folder / PARQUET_NAME]


def blank_image(size: tuple[int, int] = (64, 64)):
    """The blind baseline's image: one flat grey square."""
    from PIL import Image as PILImage

    return PILImage.new("RGB", size, BLANK_RGB)


def write_task(task_root: Path, rows: list[dict[str, Any]], image_folder: Path) -> Path:
    """Write the task's parquet (rows of ``easy_vqa_records.eval_rows`` with image bytes) and YAML; returns the folder."""
    from datasets import Dataset, Features, Image, Value

    features = Features(
        {
            "question_id": Value("int64"),
            "question": Value("string"),
            "answer": Value("string"),
            "question_type": Value("string"),
            "image_id": Value("int64"),
            "image": Image(),
        }
    )
    columns: dict[str, list] = {name: [] for name in features}
    for row in rows:
        for name in features:
            if name != "image":
                columns[name].append(row[name])
        path = image_folder / row["image"]
        try:
            columns["image"].append({"bytes": path.read_bytes(), "path": row["image"]})
        except OSError as err:
            raise FileNotFoundError(f"question {row['question_id']}: image {path} unreadable: {err}") from err
    yaml_path, blind_yaml_path, parquet_path = task_files(task_root)
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(columns, features=features).to_parquet(str(parquet_path))
    yaml_path.write_text(TASK_YAML)
    blind_yaml_path.write_text(BLIND_TASK_YAML)
    return yaml_path.parent


def doc_to_visual(doc: dict) -> list:
    """The question's image as RGB."""
    return [doc["image"].convert("RGB")]


def doc_to_visual_blind(doc: dict) -> list:
    """The blind baseline sees the same blank image for every question."""
    return [blank_image(doc["image"].size)]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """``pre_prompt + question + post_prompt`` (post_prompt defaults to LLaVA's short-answer instruction)."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', SHORT_ANSWER)}"


def normalize_answer(text: str) -> str:
    """Lower-case, punctuation to spaces, spaces collapsed: ``" Yes."`` -> ``"yes"``."""
    return " ".join(re.sub(r"[^a-z0-9/ ]", " ", text.lower()).split())


def process_results(doc: dict, results: list[str]) -> dict[str, Any]:
    """Per-question scores: ``accuracy`` for all questions, ``accuracy_<type>`` (None for other types)."""
    score = float(normalize_answer(results[0]) == normalize_answer(doc["answer"]))
    scores: dict[str, Any] = {"accuracy": score}
    for qtype, metric in TYPE_METRICS.items():
        scores[metric] = score if doc["question_type"] == qtype else None
    return scores


def aggregate_accuracy(scores: list[float | None]) -> float:
    """Mean of the scores that apply (None entries belong to other question types), as a percentage."""
    kept = [s for s in scores if s is not None]
    return 100.0 * sum(kept) / len(kept) if kept else float("nan")

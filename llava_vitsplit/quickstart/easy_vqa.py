"""Convert the ``easy-vqa`` package (64x64 shape images with VQA questions) into LLaVA-format data.

This module writes, under ``out_dir``:

- ``images/{train,test}/<id>.png``: the images (records refer to them relative to ``images/``);
- ``stage1_captions.json``: one caption record per train image for stage 1 (feature alignment);
- ``stage2_instruct.json``: the train questions as LLaVA conversations mixed with caption instructions;
- ``test_questions.jsonl``: LLaVA's evaluation question format plus answer and question type;
- ``lmms_eval_tasks/``: a local lmms-eval task over the test split (``--include_path``), see
  :mod:`llava_vitsplit.quickstart.easy_vqa_task`.

The dataset's questions and what they tell about each image are
:mod:`llava_vitsplit.quickstart.easy_vqa_source`; the records and why they are shaped so,
:mod:`llava_vitsplit.quickstart.easy_vqa_records`. Every step shows a progress bar and records its
parameters in ``steps/``; a re-run with the same parameters skips finished steps.
``llava-vitsplit easy-vqa --help`` is the command.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llava_vitsplit.quickstart.easy_vqa_records import (
    CAPTION_FORMAT,
    STAGE2_BALANCE_YES_NO,
    STAGE2_CAPTION_SHARE,
    STAGE2_MAX_TURNS,
    caption_records,
    eval_rows,
    stage2_records,
)
from llava_vitsplit.quickstart.easy_vqa_source import SPLITS, Split, load_split
from llava_vitsplit.util import atomic
from llava_vitsplit.util.atomic import write_jsonl
from llava_vitsplit.util.step_cache import StepCache

DEFAULT_OUT = Path("playground/data/easy_vqa")
STAGE1_FILE = "stage1_captions.json"
STAGE2_FILE = "stage2_instruct.json"
EVAL_FILE = "test_questions.jsonl"
STEPS_DIR = "steps"  # one stamp per finished step (llava_vitsplit.util.step_cache)


def write_json(path: Path, data: Any) -> None:
    atomic.write_json(path, data, indent=1)


class Steps(StepCache):
    """The converter's finished steps (stamps under ``<out>/steps/``); a step reruns when its settings change."""

    def __init__(self, out_dir: Path, force: bool = False) -> None:
        super().__init__(out_dir / STEPS_DIR, force)

    def run(self, name: str, params: dict, outputs: list[Path], fn: Callable[[], None]) -> float | None:
        seconds = super().run(name, params, outputs, fn)
        if seconds is None:
            print(f"[easy-vqa] {name}: up to date, skipped")
        return seconds


def copy_images(split: Split, out_dir: Path) -> None:
    """Copy the split's images to ``out_dir/images/<split>/``."""
    target = out_dir / "images" / split.name
    target.mkdir(parents=True, exist_ok=True)
    for image_id, src in tqdm(
        sorted(split.image_paths.items()), desc=f"copy {split.name} images", unit="img"
    ):
        shutil.copyfile(src, target / f"{image_id}.png")


def output_paths(out_dir: Path) -> dict[str, Path]:
    """Where ``convert`` writes each output, by name."""
    return {
        "image_folder": out_dir / "images",
        "stage1": out_dir / STAGE1_FILE,
        "stage2": out_dir / STAGE2_FILE,
        "eval": out_dir / EVAL_FILE,
        "task_dir": out_dir / "lmms_eval_tasks",
    }


def _write_training_files(
    steps: Steps, splits: dict[str, Split], base: dict, paths: dict[str, Path], stage2: dict[str, Any]
) -> None:
    """The images of every split and the stage-1 / stage-2 LLaVA records (``stage2``: its settings)."""
    for name, split in splits.items():
        steps.run(
            f"images-{name}",
            base,
            [paths["image_folder"] / name / f"{i}.png" for i in split.image_paths],
            lambda split=split: copy_images(split, paths["image_folder"].parent),
        )
    steps.run(
        "stage1",
        {**base, "captions": CAPTION_FORMAT},
        [paths["stage1"]],
        lambda: write_json(paths["stage1"], caption_records(splits["train"])),
    )
    settings = {"max_turns": stage2["max_turns"], "caption_share": stage2["caption_share"]}
    steps.run(
        "stage2",
        {**base, "captions": CAPTION_FORMAT, **settings, "balanced_yes_no": stage2["balanced"]},
        [paths["stage2"]],
        lambda: write_json(
            paths["stage2"],
            stage2_records(splits["train"], **settings, seed=stage2["seed"], balanced=stage2["balanced"]),
        ),
    )


def _write_eval_files(steps: Steps, test: Split, base: dict, paths: dict[str, Path], seed: int) -> None:
    """The shuffled test questions, the blind variant's blank image and the local lmms-eval task."""
    from llava_vitsplit.quickstart import easy_vqa_task

    rows = eval_rows(test)
    random.Random(seed).shuffle(rows)  # so lmms-eval's --limit N takes a representative sample
    steps.run("eval", {**base, "seed": seed}, [paths["eval"]], lambda: write_jsonl(paths["eval"], rows))
    blank = paths["image_folder"] / easy_vqa_task.BLANK_IMAGE_NAME
    steps.run("blank-image", {}, [blank], lambda: easy_vqa_task.blank_image().save(blank))
    steps.run(
        "lmms-eval-task",
        {**base, "seed": seed, "task": easy_vqa_task.TASK_NAME},
        easy_vqa_task.task_files(paths["task_dir"]),
        lambda: easy_vqa_task.write_task(paths["task_dir"], rows, paths["image_folder"]),
    )


def convert(
    out_dir: str | Path = DEFAULT_OUT,
    *,
    limit_images: int | None = None,
    max_turns: int | None = STAGE2_MAX_TURNS,
    caption_share: float = STAGE2_CAPTION_SHARE,
    balanced: bool = STAGE2_BALANCE_YES_NO,
    seed: int = 0,
    force: bool = False,
) -> dict[str, Path]:
    """Write all outputs (see the module docstring); returns their paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = Steps(out_dir, force)
    splits = {name: load_split(name, limit_images) for name in SPLITS}
    base = {
        "limit_images": limit_images,
        "easy_vqa_questions": {n: len(s.questions) for n, s in splits.items()},
    }
    paths = output_paths(out_dir)
    stage2 = {"max_turns": max_turns, "caption_share": caption_share, "balanced": balanced, "seed": seed}
    _write_training_files(steps, splits, base, paths, stage2)
    _write_eval_files(steps, splits["test"], base, paths, seed)
    return paths


def summary(out_dir: Path) -> str:
    """Counts per output file and test question type."""
    stage1 = json.loads((out_dir / STAGE1_FILE).read_text())
    stage2 = json.loads((out_dir / STAGE2_FILE).read_text())
    rows = [json.loads(line) for line in (out_dir / EVAL_FILE).read_text().splitlines()]
    turns = sum(len(r["conversations"]) // 2 for r in stage2)
    types = Counter(r["question_type"] for r in rows)
    return (
        f"stage 1: {len(stage1)} captions; "
        f"stage 2: {len(stage2)} conversations, {turns} questions; "
        f"test: {len(rows)} questions ({', '.join(f'{k} {v}' for k, v in sorted(types.items()))})"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-vitsplit easy-vqa", description="Convert easy-vqa to LLaVA format."
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--limit-images", type=int, default=None, help="keep the first N images of each split"
    )
    parser.add_argument(
        "--max-turns",
        type=int,
        default=STAGE2_MAX_TURNS,
        help="questions per stage-2 conversation (default: %(default)s; 0: all of an image's questions)",
    )
    parser.add_argument(
        "--caption-share",
        type=float,
        default=STAGE2_CAPTION_SHARE,
        help="fraction of stage-2 records that are captions (default: %(default).2f)",
    )
    parser.add_argument(
        "--balance-yes-no",
        dest="balanced",
        action="store_true",
        help="subsample stage-2 yes/no questions to equal yes and no answers per phrasing",
    )
    parser.add_argument("--seed", type=int, default=0, help="order of the test questions")
    parser.add_argument("--force", action="store_true", help="redo every step")
    args = parser.parse_args(argv)
    try:
        paths = convert(
            args.out,
            limit_images=args.limit_images,
            max_turns=None if args.max_turns == 0 else args.max_turns,
            caption_share=args.caption_share,
            balanced=args.balanced,
            seed=args.seed,
            force=args.force,
        )
    except ValueError as err:  # EasyVQAError, or a bad --max-turns / --caption-share
        print(f"llava-vitsplit easy-vqa: {err}")
        return 1
    print(summary(Path(args.out)))
    for name, path in paths.items():
        print(f"  {name:<13} {path}")
    return 0

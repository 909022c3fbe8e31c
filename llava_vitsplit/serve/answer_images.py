"""Image checks of ``llava-vitsplit answer``: every image still to be answered decodes before the model loads.

All bad images (missing, corrupt, truncated, too many pixels) are listed together in one error, or with
``--skip-bad`` recorded in the side file and left out of the run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_vitsplit.serve.answer_files import AnswerError, skipped_file_for, write_skipped
from llava_vitsplit.serve.images import ImageLoadError, load_image

DEFAULT_DECODE_WORKERS = min(8, os.cpu_count() or 1)


def image_paths(question: dict, image_folder: Path | None) -> list[Path]:
    """The question's image files in order (``image`` a path or a list of paths; none without it)."""
    image = question.get("image")
    names = image if isinstance(image, list) else [image] if image else []
    return [
        Path(name) if Path(name).is_absolute() or image_folder is None else image_folder / name
        for name in names
    ]


@dataclass(frozen=True)
class BadImage:
    """A question whose image cannot be used, and why (the reason names the file)."""

    question_id: Any
    image: str
    reason: str

    def describe(self) -> str:
        return f"question_id {self.question_id!r}: {self.reason}"


def _decode_error(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it decodes (the image is then dropped)."""
    try:
        load_image(path)
    except ImageLoadError as exc:
        return str(exc)
    return None


def find_bad_images(
    questions: Sequence[dict], image_folder: Path | None, workers: int = DEFAULT_DECODE_WORKERS
) -> list[BadImage]:
    """Fully decode every image the questions use (each file once, ``workers`` threads, a progress bar).

    Decoded pixels are not kept: a large benchmark's images would not fit in memory; each batch decodes
    its own images again when it runs.
    """
    from tqdm import tqdm

    paths = {q["question_id"]: image_paths(q, image_folder) for q in questions}
    unique = sorted({path for question_paths in paths.values() for path in question_paths})
    if not unique:
        return []
    errors: dict[Path, str | None] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL decoders release the GIL
        futures = {pool.submit(_decode_error, path): path for path in unique}
        with tqdm(total=len(unique), desc="checking images", unit="img", file=sys.stderr) as bar:
            for future in as_completed(futures):
                errors[futures[future]] = future.result()
                bar.update(1)
    bad = []
    for qid, question_paths in paths.items():  # a question is bad for its first bad image
        path = next((path for path in question_paths if errors[path] is not None), None)
        if path is not None:
            bad.append(BadImage(qid, str(path), errors[path]))
    return bad


def check_images(
    questions: Sequence[dict], image_folder: Path | None, workers: int = DEFAULT_DECODE_WORKERS
) -> None:
    """Fail before loading the model if any referenced image is missing, corrupt or too large."""
    bad = find_bad_images(questions, image_folder, workers)
    if bad:
        raise AnswerError(_bad_images_message(bad))


def _bad_images_message(bad: Sequence[BadImage], shown: int = 20) -> str:
    lines = "\n  ".join(item.describe() for item in bad[:shown])
    more = f"\n  ... and {len(bad) - shown} more" if len(bad) > shown else ""
    return (
        f"{len(bad)} question(s) have an image that cannot be used:\n  {lines}{more}\n"
        "fix or remove them, or pass --skip-bad to answer the others and list these in a side file"
    )


def answerable_questions(todo: Sequence[dict], args: argparse.Namespace) -> list[dict]:
    """The questions of ``todo`` whose images decode; the engine-independent step before any batch.

    Bad images are all listed in one error, or with ``--skip-bad`` recorded in the side file and left out.
    """
    image_folder = Path(args.image_folder) if args.image_folder else None
    if not args.skip_bad:
        check_images(todo, image_folder, args.decode_workers)
        return list(todo)
    bad = find_bad_images(todo, image_folder, args.decode_workers)
    skipped_path = Path(args.skipped_file or skipped_file_for(Path(args.answers_file)))
    write_skipped(skipped_path, args.question_file, bad)
    if bad:
        print(
            f"skipping {len(bad)} question(s) with a bad image (listed in {skipped_path}):\n  "
            + "\n  ".join(item.describe() for item in bad[:20]),
            file=sys.stderr,
        )
    bad_ids = {item.question_id for item in bad}
    return [q for q in todo if q["question_id"] not in bad_ids]

"""The files of ``llava-vitsplit answer``: question files, answers files (resume), shards and their merge.

Question files are JSONL or a JSON list of ``{"question_id", "image", "text"}``; every error names the file,
line and field. An answers file is appended batch by batch; :func:`answered_ids` reads it back to resume
(a line cut short by a crash is dropped). Questions skipped for a bad image are listed in a side file
(``<answers>.skipped.json``) that ``--merge`` reads to accept their absence.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from llava_vitsplit.data.records import IMAGE_TAG
from llava_vitsplit.model.chat_templates import place_image_tags
from llava_vitsplit.util.atomic import write_json, write_jsonl


class AnswerError(ValueError):
    """Bad input files (question/answer/shard); the message names the file, line and field."""


def read_records(path: Path) -> list[tuple[int, dict]]:
    """``(line_number, record)`` pairs from a JSONL file or a JSON list (line 0 for list items)."""
    if not path.is_file():
        raise AnswerError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AnswerError(f"{path}: invalid JSON: {exc}") from exc
        return [(index + 1, item) for index, item in enumerate(items)]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise AnswerError(f"{path} line {number}: invalid JSON: {exc}") from exc
    return records


def read_questions(path: Path) -> list[dict]:
    """Validated questions (``question_id`` and ``text`` required, ids unique)."""
    questions, seen = [], {}
    for number, record in read_records(path):
        if not isinstance(record, dict):
            raise AnswerError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
        for name in ("question_id", "text"):
            if name not in record:
                raise AnswerError(f"{path} line {number}: missing field {name!r}")
        if not isinstance(record["text"], str):
            raise AnswerError(f"{path} line {number}: field 'text' must be a string")
        _check_images_field(record, f"{path} line {number}")
        qid = record["question_id"]
        if qid in seen:
            raise AnswerError(
                f"{path} line {number}: duplicate question_id {qid!r} (first on line {seen[qid]})"
            )
        seen[qid] = number
        questions.append(record)
    return questions


def _check_images_field(record: dict, where: str) -> None:
    """``image``: absent, a path or a list of paths, matching the text's ``<image>`` tags (0 or one each)."""
    image = record.get("image")
    paths = image if isinstance(image, list) else [image] if image is not None else []
    if not all(isinstance(item, str) and item for item in paths):
        raise AnswerError(f"{where}: field 'image' must be a path or a list of paths, got {image!r}")
    try:
        place_image_tags(record["text"], len(paths), IMAGE_TAG)
    except ValueError as exc:
        raise AnswerError(f"{where}: {exc} (one per image, or none to put them first)") from exc


def chunk(items: Sequence, num_chunks: int, index: int) -> list:
    """The ``index``-th of ``num_chunks`` contiguous slices whose sizes differ by at most one."""
    if num_chunks < 1:
        raise ValueError(f"--num-chunks must be >= 1, got {num_chunks}")
    if not 0 <= index < num_chunks:
        raise ValueError(f"--chunk-idx must be in [0, {num_chunks}), got {index}")
    base, extra = divmod(len(items), num_chunks)
    start = index * base + min(index, extra)
    return list(items[start : start + base + (1 if index < extra else 0)])


def answered_ids(path: Path) -> set:
    """Question ids already in an answers file; a truncated last line (crash mid-write) is removed."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    lines = data.split(b"\n")
    ids, offset = set(), 0
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            try:
                ids.add(json.loads(raw)["question_id"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                if number == len(lines):  # last line, no newline: an interrupted write
                    print(f"{path}: dropping incomplete last line", file=sys.stderr)
                    with path.open("r+b") as handle:
                        handle.truncate(offset)
                    break
                raise AnswerError(f"{path} line {number}: not an answer record ({exc})") from exc
        offset += len(raw) + 1
    else:
        if data and not data.endswith(b"\n"):  # complete last record without a newline: add one
            with path.open("ab") as handle:
                handle.write(b"\n")
    return ids


def skipped_file_for(answers_file: Path) -> Path:
    """Default side file of the questions an answers file skipped for bad images."""
    return answers_file.with_suffix(".skipped.json")


def write_skipped(path: Path, question_file: str, bad: Sequence) -> None:
    """Record the skipped questions (atomically; rewritten by every ``--skip-bad`` run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"question_file": question_file, "skipped": [asdict(item) for item in bad]})


def read_skipped(path: Path) -> list[dict]:
    """The entries of a side file written by :func:`write_skipped` ([] when there is none)."""
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["skipped"]
        if not all(isinstance(entry, dict) and "question_id" in entry for entry in entries):
            raise TypeError("an entry without a question_id")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise AnswerError(f"{path}: not a skipped-questions file ({exc})") from exc
    return entries


def _read_shards(shards: Sequence[str]) -> dict:
    """Every answer record of the shard files by question id (an id answered twice is an error)."""
    by_id: dict = {}
    for shard in shards:
        for number, record in read_records(Path(shard)):
            if not isinstance(record, dict) or "question_id" not in record:
                raise AnswerError(f"{shard} line {number}: not an answer record")
            qid = record["question_id"]
            if qid in by_id:
                raise AnswerError(f"{shard} line {number}: question_id {qid!r} answered twice")
            by_id[qid] = record
    return by_id


def merge_shards(args: argparse.Namespace) -> int:
    """Write every question's answer, in question-file order, from the shard files.

    Questions a shard skipped for a bad image (its side file lists them) may be missing; their entries
    are gathered into the merged answers' side file.
    """
    questions = read_questions(Path(args.question_file))
    by_id = _read_shards(args.merge)
    skipped = [entry for shard in args.merge for entry in read_skipped(skipped_file_for(Path(shard)))]
    skipped = [entry for entry in skipped if entry["question_id"] not in by_id]
    skipped_ids = {entry["question_id"] for entry in skipped}
    accounted = by_id.keys() | skipped_ids
    missing = [q["question_id"] for q in questions if q["question_id"] not in accounted]
    if missing and not args.allow_missing:
        raise AnswerError(
            f"{len(missing)} of {len(questions)} questions have no answer in the shards "
            f"(first: {missing[:5]}); finish those shards or pass --allow-missing"
        )
    known = {q["question_id"] for q in questions}
    extra = [qid for qid in by_id if qid not in known]
    if extra:
        raise AnswerError(
            f"{len(extra)} answers are for ids not in {args.question_file} (first: {extra[:5]})"
        )
    out_path = Path(args.answers_file)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_path, (by_id[q["question_id"]] for q in questions if q["question_id"] in by_id))
    print(f"merged {len(by_id)} answers from {len(args.merge)} shard(s) into {out_path}", file=sys.stderr)
    if skipped:
        write_json(skipped_file_for(out_path), {"question_file": args.question_file, "skipped": skipped})
        print(
            f"{len(skipped)} question(s) were skipped for bad images: {skipped_file_for(out_path)}",
            file=sys.stderr,
        )
    return 0

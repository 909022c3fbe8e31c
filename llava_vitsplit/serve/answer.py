"""``llava-vitsplit answer``: batch inference on LLaVA question files, shardable and resumable.

Input: JSONL (or a JSON list) of ``{"question_id", "image" (relative to --image-folder, optional),
"text"}`` as in LLaVA's eval scripts; ``"image"`` may be a list of paths (several images: the text holds
one ``<image>`` per image where each goes, or none and they go first, as in training records). Output: JSONL ``{"question_id", "prompt", "text", "answer_id",
"model_id", "metadata"}``, appended batch by batch. Re-running skips question ids already in the answers
file (a line cut short by a crash is dropped), so an interrupted run resumes where it stopped.

Sharding: ``--num-chunks N --chunk-idx K`` answers the K-th of N contiguous, near-equal slices (one
process per GPU); ``--merge SHARD...`` then writes all answers in question-file order and checks that
every question was answered exactly once. Decoding is greedy unless ``--temperature`` > 0.

Before the model is loaded, every image still to be answered is decoded (in parallel, with a progress
bar); all bad ones (missing, corrupt, truncated, too many pixels) are listed together in one error, so
one rerun fixes them all. ``--skip-bad`` answers the others instead and writes the skipped ids with
their reasons to a side file (``<answers>.skipped.json`` by default, rewritten atomically by every such
run); ``--merge`` accepts questions missing from a shard when that shard's side file lists them.

Engines: ``--engine transformers`` (default) runs ``generate``; ``--engine vllm`` runs the same prompts
through vLLM (``make vllm``; same files, resume and sharding; larger default batches, since vLLM
schedules a batch's requests itself).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llava_vitsplit.data.records import IMAGE_TAG
from llava_vitsplit.model.chat_templates import place_image_tags
from llava_vitsplit.serve.images import ImageLoadError, load_image
from llava_vitsplit.serve.vllm_plugin import VLLMUnavailableError, require_vllm
from llava_vitsplit.util.atomic import write_json, write_jsonl

DEFAULT_DECODE_WORKERS = min(8, os.cpu_count() or 1)


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


def skipped_file_for(answers_file: Path) -> Path:
    """Default side file of the questions an answers file skipped for bad images."""
    return answers_file.with_suffix(".skipped.json")


def write_skipped(path: Path, question_file: str, bad: Sequence[BadImage]) -> None:
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


DEFAULT_BATCH_SIZES = {"transformers": 8, "vllm": 256}


def open_engine(args: argparse.Namespace, settings) -> tuple[object, Callable]:
    """The processor (for prompts) and ``generate(prompts, images) -> replies`` of ``args.engine``."""
    if args.engine == "vllm":
        from llava_vitsplit.serve.vllm_engine import VLLMEngine, sampling_params

        require_vllm()
        sampling_params(settings)  # refuse unsupported settings before the engine starts
        engine = VLLMEngine.open(args.model, dtype=args.dtype)
        return engine.processor, lambda prompts, images: engine.generate(prompts, images, settings)
    from llava_vitsplit.serve.generation import generate_batch
    from llava_vitsplit.serve.loading import load_model

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    return loaded.processor, lambda prompts, images: generate_batch(loaded, prompts, images, settings)


def batches(items: Sequence, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _batch_inputs(batch: Sequence[dict], args: argparse.Namespace, processor) -> tuple[list, list, list]:
    """Prompts, decoded images (in prompt order) and question texts of one batch."""
    from llava_vitsplit.serve.generation import render_prompt, user_messages

    image_folder = Path(args.image_folder) if args.image_folder else None
    prompts, images, texts = [], [], []
    for question in batch:
        text = question["text"] + args.prompt_suffix
        paths = image_paths(question, image_folder)
        for path in paths:
            try:
                images.append(load_image(path))
            except ImageLoadError as exc:  # checked before the run: the file changed since
                raise AnswerError(
                    f"question_id {question['question_id']!r}: {exc} (it decoded when the run started; "
                    f"the answers written so far are kept and a rerun resumes after them)"
                ) from exc
        messages = user_messages(text, len(paths), processor.image_token)
        prompts.append(render_prompt(processor, messages))
        texts.append(text)
    return prompts, images, texts


def answer_questions(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from llava_vitsplit.serve.generation import GenerationSettings

    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH_SIZES[args.engine]
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        num_beams=args.num_beams,
    )
    questions = chunk(read_questions(Path(args.question_file)), args.num_chunks, args.chunk_idx)
    answers_file = Path(args.answers_file)
    done = answered_ids(answers_file)
    todo = [q for q in questions if q["question_id"] not in done]
    print(
        f"chunk {args.chunk_idx}/{args.num_chunks}: {len(questions)} questions, "
        f"{len(questions) - len(todo)} already answered, {len(todo)} to do",
        file=sys.stderr,
    )
    todo = answerable_questions(todo, args)
    if not todo:
        return 0
    processor, generate = open_engine(args, settings)
    model_id = args.model_id or Path(args.model.rstrip("/")).name
    answers_file.parent.mkdir(parents=True, exist_ok=True)
    with answers_file.open("a", encoding="utf-8") as out, tqdm(total=len(todo), file=sys.stderr) as bar:
        for batch in batches(todo, args.batch_size):
            prompts, images, texts = _batch_inputs(batch, args, processor)
            replies = generate(prompts, images)
            for question, text, reply in zip(batch, texts, replies, strict=True):
                record = {
                    "question_id": question["question_id"],
                    "prompt": text,
                    "text": reply,
                    "answer_id": uuid.uuid4().hex,
                    "model_id": model_id,
                    "metadata": {},
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(batch))
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-vitsplit answer", description=__doc__.splitlines()[0])
    parser.add_argument("--question-file", required=True, help="LLaVA question JSONL")
    parser.add_argument(
        "--answers-file", required=True, help="answers JSONL (appended; merged output with --merge)"
    )
    parser.add_argument("--model", help="checkpoint directory (or hub id); required unless --merge")
    parser.add_argument(
        "--image-folder", default=None, help="folder the questions' image paths are relative to"
    )
    parser.add_argument("--model-id", default=None, help="model_id written in answers (default: folder name)")
    parser.add_argument("--num-chunks", type=int, default=1)
    parser.add_argument("--chunk-idx", type=int, default=0)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="questions per batch (and per write to the answers file); default 8, with --engine vllm 256",
    )
    parser.add_argument(
        "--engine",
        choices=tuple(DEFAULT_BATCH_SIZES),
        default="transformers",
        help="transformers generate (default) or vLLM (needs `make vllm`: run .venv-vllm/bin/llava-vitsplit)",
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--prompt-suffix",
        default="",
        help='appended to every question, e.g. "\\nAnswer with the option\'s letter from the given choices directly."',
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="answer the questions whose image decodes; list the others in --skipped-file",
    )
    parser.add_argument(
        "--skipped-file", default=None, help="side file of skipped ids (default: <answers>.skipped.json)"
    )
    parser.add_argument(
        "--decode-workers",
        type=int,
        default=DEFAULT_DECODE_WORKERS,
        help="threads that check the images before the run",
    )
    parser.add_argument("--merge", nargs="+", metavar="SHARD", help="merge these shard answer files")
    parser.add_argument(
        "--allow-missing", action="store_true", help="with --merge: tolerate unanswered questions"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.prompt_suffix = args.prompt_suffix.replace("\\n", "\n")  # allow a shell-friendly "\n"
    try:
        if args.merge:
            return merge_shards(args)
        if not args.model:
            parser.error("--model is required (unless --merge)")
        return answer_questions(args)
    except (AnswerError, FileNotFoundError, ValueError, VLLMUnavailableError) as exc:
        print(f"llava-vitsplit answer: {exc}", file=sys.stderr)
        return 2

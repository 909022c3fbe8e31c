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

The question, answers and shard files are read and written by ``serve/answer_files.py``, the images
checked by ``serve/answer_images.py``.

Engines: ``--engine transformers`` (default) runs ``generate``; ``--engine vllm`` runs the same prompts
through vLLM (``make vllm``; same files, resume and sharding; larger default batches, since vLLM
schedules a batch's requests itself).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from llava_vitsplit.serve.answer_files import (
    AnswerError,
    answered_ids,
    chunk,
    merge_shards,
    read_questions,
)
from llava_vitsplit.serve.answer_images import DEFAULT_DECODE_WORKERS, answerable_questions, image_paths
from llava_vitsplit.serve.images import ImageLoadError, load_image
from llava_vitsplit.serve.vllm_plugin import VLLMUnavailableError, require_vllm

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

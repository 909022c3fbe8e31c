"""``llava-vitsplit demo`` command line: load a chat engine, build the gradio app, launch it.

``--engine transformers`` (the default, ``make demo``) generates in this process with ``generate``,
``--concurrency`` replies at a time (default 1). ``--engine vllm`` (``make vllm``; run it with
``.venv-vllm/bin/llava-vitsplit``) serves every reply from one vLLM engine, which batches the replies
being generated (default ``--concurrency`` 16). Both build the prompt from the processor's chat
template. The app itself is :mod:`llava_vitsplit.serve.demo`.
"""

from __future__ import annotations

import argparse
import os
import sys

from llava_vitsplit.serve.chat_engines import ENGINES, open_chat_engine
from llava_vitsplit.serve.demo import (
    DEFAULT_MAX_FILE_SIZE,
    TRANSFER_LIMIT_FACTOR,
    build_demo,
    parse_file_size,
)
from llava_vitsplit.serve.generation import GenerationSettings
from llava_vitsplit.serve.images import DEFAULT_MAX_PIXELS
from llava_vitsplit.serve.loading import DTYPE_CHOICES
from llava_vitsplit.serve.vllm_plugin import VLLMUnavailableError

# replies generated at once when --concurrency is not given: vLLM batches them, transformers runs one
DEFAULT_CONCURRENCY = {"transformers": 1, "vllm": 16}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-vitsplit demo", description="Gradio web chat on a checkpoint"
    )
    parser.add_argument("--model", required=True, help="checkpoint directory (or hub id)")
    parser.add_argument(
        "--engine", default="transformers", choices=ENGINES, help="what generates the replies"
    )
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--public", action="store_true", help="listen on all interfaces (0.0.0.0), not only 127.0.0.1"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="replies generated at once, others queue (default: 1 for transformers, 16 for vllm)",
    )
    parser.add_argument("--queue-size", type=int, default=64, help="max waiting requests before refusing")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (transformers)")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    parser.add_argument("--temperature", type=float, default=0.2, help="default of the slider")
    parser.add_argument("--top-p", type=float, default=1.0, help="default of the slider")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="default of the slider")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument(
        "--max-file-size",
        default=DEFAULT_MAX_FILE_SIZE,
        help="uploads larger than this are refused in the chat (gradio stops transfers over "
        f"{TRANSFER_LIMIT_FACTOR}x this)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    concurrency = args.concurrency if args.concurrency is not None else DEFAULT_CONCURRENCY[args.engine]
    if concurrency < 1:
        parser.error("--concurrency must be >= 1")
    try:
        max_file_bytes = parse_file_size(args.max_file_size)
    except ValueError as exc:
        parser.error(str(exc))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        engine = open_chat_engine(args.engine, args.model, device=args.device, dtype=args.dtype)
    except (FileNotFoundError, ValueError, VLLMUnavailableError) as exc:
        print(f"llava-vitsplit demo: {exc}", file=sys.stderr)
        return 2
    print(f"loaded model {engine.description}", file=sys.stderr, flush=True)
    defaults = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p
    )
    demo = build_demo(
        engine,
        concurrency=concurrency,
        max_image_pixels=args.max_image_pixels,
        max_file_bytes=max_file_bytes,
        defaults=defaults,
    )
    demo.queue(max_size=args.queue_size)
    host = "0.0.0.0" if args.public else "127.0.0.1"
    try:
        demo.launch(
            server_name=host,
            server_port=args.port,
            max_file_size=TRANSFER_LIMIT_FACTOR * max_file_bytes,
            show_error=False,
        )
    finally:
        engine.close()
    return 0

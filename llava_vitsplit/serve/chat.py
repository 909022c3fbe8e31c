"""``llava-vitsplit chat``: multi-turn terminal chat about images, with streamed replies.

Reads user turns from stdin (works interactively and piped), prints ``ASSISTANT:`` and the reply token
by token. Commands: ``/image PATH_OR_URL`` (adds an image to the conversation: it goes with your next
message, as ``<image>`` first or where that message writes ``<image>``), ``/reset`` (forget the turns;
the images go with the next message), ``/exit`` (or end of input). ``--image`` may be given several
times. A bad image is reported on stderr and the session continues.
"""

from __future__ import annotations

import argparse
import sys

from llava_vitsplit.serve.generation import Conversation, GenerationSettings, stream_reply
from llava_vitsplit.serve.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from llava_vitsplit.serve.loading import DTYPE_CHOICES, load_model

HELP = "commands: /image PATH_OR_URL (adds an image; it goes with your next message), /reset, /exit"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-vitsplit chat", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (or hub id)")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        help="image file path or http(s) URL to talk about (repeat for several; they go with the first message)",
    )
    parser.add_argument("--temperature", type=float, default=0.2, help="0 = greedy (default 0.2)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default 1.0)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPE_CHOICES, help="auto: bf16 on CUDA, fp16 on MPS, fp32 on CPU"
    )
    parser.add_argument("--system", default=None, help="replace the checkpoint's default system prompt")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    return parser


def _open_image(source: str, max_pixels: int):
    try:
        return load_image(source, max_pixels=max_pixels)
    except ImageLoadError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return None


def run(args: argparse.Namespace, stdin=sys.stdin, stdout=sys.stdout) -> int:
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p
    )
    images = [_open_image(source, args.max_image_pixels) for source in args.image]
    if any(image is None for image in images):
        return 1
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"loaded {args.model} on {loaded.device} ({loaded.dtype}); {HELP}", file=sys.stderr, flush=True)
    conversation = Conversation(images=images, system=args.system)
    while True:
        stdout.write("USER: ")
        stdout.flush()
        line = stdin.readline()
        if not line:  # end of input
            stdout.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            return 0
        if text == "/reset":
            conversation = Conversation(images=conversation.images, system=args.system)
            print("(conversation reset)", file=sys.stderr, flush=True)
            continue
        if text.startswith("/image"):
            source = text.removeprefix("/image").strip()
            new_image = _open_image(source, args.max_image_pixels) if source else None
            if new_image is not None:
                conversation.add_image(new_image)
                print(
                    f"(image {len(conversation.images)}: {source}; it goes with your next message)",
                    file=sys.stderr,
                    flush=True,
                )
            elif not source:
                print("usage: /image PATH_OR_URL", file=sys.stderr, flush=True)
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]}; {HELP}", file=sys.stderr, flush=True)
            continue
        try:
            conversation.add_user(text, loaded.processor.image_token)
        except ValueError as exc:  # <image> tags that do not match the images sent with this message
            print(f"error: {exc}", file=sys.stderr, flush=True)
            continue
        stdout.write("ASSISTANT: ")
        stdout.flush()
        reply = []
        for chunk in stream_reply(loaded, conversation, settings):
            reply.append(chunk)
            stdout.write(chunk)
            stdout.flush()
        stdout.write("\n")
        stdout.flush()
        conversation.set_reply("".join(reply).strip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as exc:
        print(f"llava-vitsplit chat: {exc}", file=sys.stderr)
        return 2

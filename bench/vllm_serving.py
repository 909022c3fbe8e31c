"""Serving with long answers: the transformers engine vs vLLM side by side, batch and concurrent clients.

Two workloads on one checkpoint and the same images, "Describe the image in detail.", greedy, exactly
``--new-tokens`` new tokens per reply (``min_new_tokens`` = ``max_new_tokens``: transformers'
``min_new_tokens``, vLLM's ``min_tokens``, so neither engine stops early and both generate the same count):

- ``long``: every reply in one call, as ``answer`` runs: transformers ``generate`` in batches of
  ``--batch-size``, vLLM ``LLM.generate`` on all of them (its scheduler batches), once per
  ``--vllm-threads`` setting (``machine``: the binding this project sets from ``os.sched_getaffinity``;
  ``auto``: vLLM's own default, which on 2 cores keeps one for its scheduler; ``one``: one core, to compare
  with the transformers engine under ``OMP_NUM_THREADS=1``). Output tokens/s, the share
  of identical replies.
- ``server``: ``N`` concurrent clients (``--clients 1 4 16``), each streaming ``max(1, --requests // N)``
  replies one after another. transformers: the demo's engine in this process (one ``generate`` per reply,
  each in its own thread; it has no HTTP server). vLLM: ``llava-vitsplit serve`` (the OpenAI server), chat
  requests streamed over HTTP. Requests/s, output tokens/s, time to first token (TTFT) and inter-token
  latency (ITL: per request, (last token time - first token time) / (tokens - 1)), p50 and p95.

Engine start-up is timed apart. Every figure carries the load average before and after it and the CPU
seconds the engine's processes used (on a shared machine, tokens per CPU second compare the engines'
work; wall-clock rates also depend on the share of the machine each engine's processes got). Run with the vLLM venv's python::

    .venv-vllm/bin/python bench/vllm_serving.py --workload long --model checkpoints/quickstart/checkpoint \\
        --question-file playground/data/easy_vqa/test_questions.jsonl \\
        --image-folder playground/data/easy_vqa/images --out bench_out/serving
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from serving_clients import http_stream, run_clients, running_server, tree_cpu_seconds

PROMPT = "Describe the image in detail."


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def machine() -> dict:
    """CPU model, cores this process may use, and the flags that matter for the kernels."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])  # fmt: skip
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "fma")
    return {"cpu": model, "cpus": len(os.sched_getaffinity(0)), "flags": [f for f in wanted if f in flags]}


def first_images(question_file: str, image_folder: str, count: int) -> list:
    """The images of the first ``count`` distinct images among the questions (RGB)."""
    from llava_vitsplit.serve.answer_files import read_questions
    from llava_vitsplit.serve.images import load_image

    names: list[str] = []
    for question in read_questions(Path(question_file)):
        if question["image"] not in names:
            names.append(question["image"])
        if len(names) == count:
            break
    return [load_image(str(Path(image_folder) / name)) for name in names]


def settings(new_tokens: int):
    from llava_vitsplit.serve.generation import GenerationSettings

    return GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens)


def timed(fn):
    """``fn()`` and its wall-clock seconds, CPU seconds (this process tree) and load average before/after."""
    load_before, begin, cpu_before = load_avg(), time.perf_counter(), tree_cpu_seconds()
    result = fn()
    seconds, cpu_seconds = time.perf_counter() - begin, tree_cpu_seconds() - cpu_before
    return result, {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 1),
        "load": [load_before, load_avg()],
    }


def long_transformers(args: argparse.Namespace, images: list) -> tuple[dict, list[list[int]]]:
    """One ``generate`` per ``--batch-size`` replies; returns the figures and each reply's token ids."""
    import torch

    from llava_vitsplit.serve.generation import prepare_inputs, render_prompt, user_messages
    from llava_vitsplit.serve.loading import load_model

    loaded, start = timed(lambda: load_model(args.model, device=args.device, dtype=args.dtype))
    prompt = render_prompt(loaded.processor, user_messages(PROMPT, 1, loaded.processor.image_token))
    kwargs = settings(args.new_tokens).generate_kwargs(loaded.tokenizer)

    def run() -> list[list[int]]:
        replies = []
        for first in range(0, len(images), args.batch_size):
            batch = images[first : first + args.batch_size]
            inputs = prepare_inputs(loaded, [prompt] * len(batch), batch)
            with torch.inference_mode():
                output = loaded.model.generate(**inputs, **kwargs)  # [B, T + new]
            replies += output[:, inputs["input_ids"].shape[1] :].tolist()
        return replies

    replies, answering = timed(run)
    figures = {"engine": "transformers", "threads": torch.get_num_threads(), "batch_size": args.batch_size}
    return {**figures, "startup": start, "answering": answering}, replies


def long_vllm(args: argparse.Namespace, images: list, threads: str) -> tuple[dict, list[list[int]]]:
    """All replies in one ``LLM.generate``; ``threads``: ``machine`` (this project's binding) or ``auto``."""
    from llava_vitsplit.serve.generation import render_prompt, user_messages
    from llava_vitsplit.serve.vllm_engine import VLLMEngine, prompt_inputs, sampling_params
    from llava_vitsplit.serve.vllm_threads import BIND_VARIABLE, RESERVED_VARIABLE, SOURCE_VARIABLE

    for variable in (BIND_VARIABLE, RESERVED_VARIABLE, SOURCE_VARIABLE):
        os.environ.pop(variable, None)
    if threads == "auto":
        os.environ[BIND_VARIABLE] = "auto"  # a user setting: the plugin leaves it to vLLM
    elif threads == "one":
        os.environ[BIND_VARIABLE] = str(min(os.sched_getaffinity(0)))  # one thread, as OMP_NUM_THREADS=1
    options = {"enforce_eager": True} if args.enforce_eager else {}
    engine, start = timed(lambda: VLLMEngine.open(args.model, dtype=args.dtype, **options))
    prompt = render_prompt(engine.processor, user_messages(PROMPT, 1, engine.processor.image_token))
    inputs = list(prompt_inputs([prompt] * len(images), images, engine.processor.image_token))
    params = sampling_params(settings(args.new_tokens))
    outputs, answering = timed(lambda: engine.llm.generate(inputs, params, use_tqdm=False))
    binding = os.environ.get(BIND_VARIABLE)
    engine.close()
    replies = [list(output.outputs[0].token_ids) for output in outputs]
    return {"engine": f"vllm ({threads})", "bind": binding, "startup": start, "answering": answering}, replies


def long_workload(args: argparse.Namespace, images: list) -> dict:
    """transformers, then vLLM per ``--vllm-threads``; every reply must have exactly ``--new-tokens``."""
    runs = [long_transformers(args, images)]
    release_device_memory(args.device)
    if "vllm" in args.engines:
        runs += [long_vllm(args, images, threads) for threads in args.vllm_threads]
    reference = runs[0][1]
    for row, replies in runs:
        if any(len(reply) != args.new_tokens for reply in replies):
            raise SystemExit(f"{row['engine']}: a reply does not have {args.new_tokens} tokens")
        row["output_tokens"] = len(replies) * args.new_tokens
        row["output_tokens_per_s"] = round(row["output_tokens"] / row["answering"]["seconds"], 1)
        cpu_seconds = row["answering"]["cpu_seconds"]  # 0.0 when a tiny run is shorter than the rounding
        row["output_tokens_per_cpu_s"] = round(row["output_tokens"] / cpu_seconds, 1) if cpu_seconds else None
        row["identical_replies"] = sum(a == b for a, b in zip(reference, replies, strict=True))
        row["speedup"] = round(row["output_tokens_per_s"] / runs[0][0]["output_tokens_per_s"], 2)
        per_cpu = (row["output_tokens_per_cpu_s"], runs[0][0]["output_tokens_per_cpu_s"])
        row["speedup_per_cpu_s"] = round(per_cpu[0] / per_cpu[1], 2) if all(per_cpu) else None
    return {"replies": len(images), "rows": [row for row, _ in runs]}


def release_device_memory(device: str) -> None:
    """Give the transformers engine's cached GPU memory back before vLLM sizes its KV cache from what is free."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def transformers_stream(engine, image, new_tokens: int):
    """A client call for the demo's transformers engine: yields once per streamed text chunk."""
    from llava_vitsplit.serve.generation import Conversation

    def call():
        conversation = Conversation(images=[image])
        conversation.add_user(PROMPT)
        text = ""
        for chunk in engine.stream(conversation, settings(new_tokens)):
            text += chunk
            yield None
        yield len(engine.loaded.tokenizer.encode(text, add_special_tokens=False))

    return call


def server_workload(args: argparse.Namespace, images: list) -> dict:
    from llava_vitsplit.serve.chat_engines import open_chat_engine

    rows = []
    engine, start = timed(lambda: open_chat_engine("transformers", args.model, args.device, args.dtype))
    for clients in args.clients:
        calls = [
            transformers_stream(engine, images[i % len(images)], args.new_tokens) for i in range(clients)
        ]
        rows.append({"engine": "transformers (demo engine)", "startup": start,
                     **run_clients(calls, max(1, args.requests // clients), args.new_tokens)})  # fmt: skip
    engine.close()
    del engine
    release_device_memory(args.device)
    if "vllm" not in args.engines:
        return {"rows": rows}
    extra = ["--enforce-eager"] if args.enforce_eager else []
    with running_server(args.model, Path(args.out) / "server.log", extra, args.dtype) as (base, start):
        for clients in args.clients:
            calls = [
                http_stream(base, images[i % len(images)], PROMPT, args.new_tokens) for i in range(clients)
            ]
            rows.append({"engine": "vllm (OpenAI server)", "startup": start,
                         **run_clients(calls, max(1, args.requests // clients), args.new_tokens)})  # fmt: skip
    return {"rows": rows}


def table(report: dict) -> str:
    """The report as a markdown table (one row per engine, or per engine and client count)."""

    def load(figure: dict) -> str:
        return "-".join(f"{value:.1f}" for value in figure["load"])

    if report["workload"] == "long":
        lines = ["| engine | start-up s | answering s | tokens/s | tokens per CPU s | vs transformers (wall / CPU) "
                 "| identical replies | load avg |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in report["rows"]:
            lines.append(f"| {r['engine']} | {r['startup']['seconds']:.1f} | {r['answering']['seconds']:.1f} | "
                         f"{r['output_tokens_per_s']} | {r['output_tokens_per_cpu_s']} | {r['speedup']}x / "
                         f"{r['speedup_per_cpu_s']}x | {r['identical_replies']}/{report['replies']} | "
                         f"{load(r['answering'])} |")  # fmt: skip
        return "\n".join(lines)
    lines = ["| engine | clients | requests | requests/s | tokens/s | tokens per CPU s | TTFT p50 / p95 s "
             "| ITL p50 / p95 ms | load avg |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["rows"]:
        lines.append(f"| {r['engine']} | {r['clients']} | {r['requests']} | {r['requests_per_s']} | "
                     f"{r['output_tokens_per_s']} | {r['output_tokens_per_cpu_s']} | {r['ttft_s']['p50']} / "
                     f"{r['ttft_s']['p95']} | {r['itl_ms']['p50']} / {r['itl_ms']['p95']} | {load(r)} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("long", "server"))
    parser.add_argument("--model")
    parser.add_argument("--question-file")
    parser.add_argument("--image-folder")
    parser.add_argument("--images", type=int, default=16, help="distinct images (replies of `long`)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers replies per generate (long)")
    parser.add_argument(
        "--vllm-threads", nargs="+", default=["machine", "auto"], choices=("machine", "auto", "one")
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=16, help="requests per client level (server)")
    parser.add_argument("--device", default="cpu", help="the transformers engine's device")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="both engines")
    parser.add_argument("--engines", nargs="+", default=["transformers", "vllm"], choices=("transformers", "vllm"),
                        help="transformers always runs (the reference); without vllm, the vLLM half is skipped")  # fmt: skip
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile (tests)")
    parser.add_argument("--out", default="bench_out/serving")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--table", metavar="REPORT_JSON", help="only print this report as a markdown table")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if not (args.workload and args.model and args.question_file and args.image_folder):
        parser.error("--workload, --model, --question-file and --image-folder are required (or --table)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    images = first_images(args.question_file, args.image_folder, args.images)
    report = {"workload": args.workload, "model": args.model, "new_tokens": args.new_tokens, "dtype": args.dtype,
              "engines": args.engines, "machine": machine(), "load_at_start": load_avg()}  # fmt: skip
    workload = long_workload if args.workload == "long" else server_workload
    report.update(workload(args, images))
    report["load_at_end"] = load_avg()
    from bench_common import write_json

    write_json(Path(args.out) / f"{args.workload}.json", report)
    if args.json:
        write_json(args.json, report)
    print(json.dumps(report, indent=2))
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

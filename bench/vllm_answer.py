"""``answer`` with the transformers engine vs vLLM, side by side in one run, and the server's time to first token.

Measures, on one checkpoint and the same questions: questions/s and output tokens/s of
``llava-vitsplit answer --engine transformers`` and ``--engine vllm`` (engine start-up timed apart, as is
the whole command), the share of identical answers, and the time to the first streamed token of single
chat requests on ``llava-vitsplit serve`` (median of ``--ttft-requests``). Output tokens are the answers
re-tokenised (no special tokens), the same count for both engines. Run with the vLLM venv's python:

    .venv-vllm/bin/python bench/vllm_answer.py --model checkpoints/quickstart/checkpoint \\
        --question-file playground/data/easy_vqa/test_questions.jsonl \\
        --image-folder playground/data/easy_vqa/images --limit 300 --out bench_out/vllm

``--build-untrained DIR`` first saves the quickstart architecture (DINOv2-S at the quickstart's image
size + ViT-Split + SmolLM2-135M from ``llava-vitsplit assets``) with an untrained connector to DIR and
benchmarks that: the same compute as the trained checkpoint, not the same answers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path


def build_untrained_quickstart(out: Path) -> Path:
    """The quickstart's model, connector untrained, from the recovered offline assets."""
    from llava_vitsplit.presets import get_preset
    from llava_vitsplit.quickstart.budget import get_budget
    from llava_vitsplit.quickstart.tower import sized_tower
    from llava_vitsplit.train.arguments import DataArguments, ModelArguments
    from llava_vitsplit.train.model_setup import build_from_recipe, resolve_recipe

    preset = get_preset("quickstart")
    tower = sized_tower(
        preset.vision_tower, out.parent / f"{out.name}-tower", get_budget("default").image_size
    )
    # the training stack's own resolution of the preset (stage-1 settings, no stage-1 connector)
    model_args = ModelArguments(
        preset="quickstart", vision_tower=str(tower), model_name_or_path=preset.language_model
    )
    recipe, _ = resolve_recipe(model_args, DataArguments(), seed=0)
    model, processor = build_from_recipe(recipe)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def first_questions(path: Path, limit: int, out: Path) -> Path:
    from llava_vitsplit.serve.answer_files import read_questions

    questions = read_questions(path)[:limit]
    out.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return out


def run_answer(engine: str, args: argparse.Namespace, questions: Path, out: Path) -> dict:
    """Time one ``answer`` run (engine start-up apart); returns the figures and the answers."""
    from llava_vitsplit.serve import answer

    started: dict[str, float] = {}
    open_engine = answer.open_engine

    def timed_open(*a, **k):
        begin = time.perf_counter()
        result = open_engine(*a, **k)
        started["s"] = time.perf_counter() - begin
        return result

    answer.open_engine = timed_open  # this script's own timer around our own function
    argv = ["--model", args.model, "--question-file", str(questions), "--answers-file", str(out)]
    argv += ["--image-folder", args.image_folder, "--max-new-tokens", str(args.max_new_tokens)]
    argv += ["--engine", engine, "--dtype", "fp32", "--device", "cpu"]
    out.unlink(missing_ok=True)
    begin = time.perf_counter()
    code = answer.main(argv)
    total = time.perf_counter() - begin
    answer.open_engine = open_engine
    if code != 0:
        raise SystemExit(f"answer --engine {engine} exited with {code}")
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    return {"total_s": total, "startup_s": started["s"], "texts": texts}


def add_rates(result: dict, tokenizer) -> dict:
    answering = result["total_s"] - result["startup_s"]
    tokens = sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in result["texts"])
    return {
        "startup_s": round(result["startup_s"], 1),
        "answering_s": round(answering, 1),
        "total_s": round(result["total_s"], 1),
        "questions_per_s": round(len(result["texts"]) / answering, 2),
        "output_tokens_per_s": round(tokens / answering, 1),
        "output_tokens": tokens,
    }


def stream_first_token_s(base: str, body: dict) -> float:
    """Seconds from sending a streaming chat request to its first content chunk."""
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    begin = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    return time.perf_counter() - begin
    raise RuntimeError("the stream ended without content")


def chat_body(questions: Path, image_folder: str, max_tokens: int) -> dict:
    import base64

    question = json.loads(questions.read_text().splitlines()[0])
    data = base64.b64encode((Path(image_folder) / question["image"]).read_bytes()).decode()
    suffix = Path(question["image"]).suffix.lstrip(".") or "png"
    content = [
        {"type": "image_url", "image_url": {"url": f"data:image/{suffix};base64,{data}"}},
        {"type": "text", "text": question["text"]},
    ]
    return {"model": "bench", "messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": max_tokens}  # fmt: skip


def measure_ttft(args: argparse.Namespace, questions: Path, log: Path) -> dict:
    from serving_clients import running_server

    with running_server(args.model, log, [], port=8765) as (base, startup):
        body = chat_body(questions, args.image_folder, args.max_new_tokens)
        stream_first_token_s(base, body)  # warm-up request, not counted
        times = [stream_first_token_s(base, body) for _ in range(args.ttft_requests)]
    return {"server_startup_s": round(startup["seconds"], 1), "ttft_median_s": round(statistics.median(times), 3),
            "ttft_all_s": [round(t, 3) for t in times]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--build-untrained", action="store_true", help="first save an untrained model at --model"
    )
    parser.add_argument("--question-file", required=True)
    parser.add_argument("--image-folder", required=True)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--ttft-requests", type=int, default=5, help="0: do not start the server")
    parser.add_argument("--out", default="bench_out/vllm")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.build_untrained:
        build_untrained_quickstart(Path(args.model))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    questions = first_questions(Path(args.question_file), args.limit, out / "questions.jsonl")
    raw = {
        engine: run_answer(engine, args, questions, out / f"answers-{engine}.jsonl")
        for engine in ("transformers", "vllm")
    }
    report = {engine: add_rates(result, tokenizer) for engine, result in raw.items()}
    same = sum(a == b for a, b in zip(raw["transformers"]["texts"], raw["vllm"]["texts"], strict=True))
    report["questions"] = len(raw["vllm"]["texts"])
    report["identical_answers"] = same
    report["speedup_questions_per_s"] = round(
        report["vllm"]["questions_per_s"] / report["transformers"]["questions_per_s"], 2
    )
    if args.ttft_requests > 0:  # 0: no server (bench/vllm_serving.py times the server under load)
        report["server"] = measure_ttft(args, questions, out / "server.log")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

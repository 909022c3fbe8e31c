"""Where the transformers engine's long-answer decoding spends its CPU time (torch profiler).

Runs the long-answer workload of ``bench/vllm_serving.py`` (the same prompt, images and forced length)
for a few tokens under ``torch.profiler`` and prints the operators by self CPU time, and the share of
the matrix multiplications (``aten::mm``/``addmm``/``bmm``/``linear`` kernels): the part vLLM's CPU
engine computes with the same kind of GEMM kernels on the same cores. Writes the table as JSON::

    .venv/bin/python bench/generate_profile.py --model checkpoints/bench-vllm/untrained-quickstart \\
        --question-file playground/data/easy_vqa/test_questions.jsonl \\
        --image-folder playground/data/easy_vqa/images --out bench_out/serving/profile.json
"""

from __future__ import annotations

import argparse
import os
import sys

from bench_common import write_json
from vllm_serving import PROMPT, first_images, settings

MATMUL_OPS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
)


def profile(args: argparse.Namespace) -> dict:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from llava_vitsplit.serve.generation import prepare_inputs, render_prompt, user_messages
    from llava_vitsplit.serve.loading import load_model

    loaded = load_model(args.model, device="cpu", dtype="fp32")
    images = first_images(args.question_file, args.image_folder, args.images)
    prompt = render_prompt(loaded.processor, user_messages(PROMPT, 1, loaded.processor.image_token))
    inputs = prepare_inputs(loaded, [prompt] * len(images), images)
    kwargs = settings(args.new_tokens).generate_kwargs(loaded.tokenizer)
    with torch.inference_mode():
        loaded.model.generate(**inputs, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            loaded.model.generate(**inputs, **kwargs)
    events = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    rows = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[: args.top]
    matmul = sum(event.self_cpu_time_total for event in events if event.key in MATMUL_OPS)
    return {
        "replies": len(images),
        "new_tokens": args.new_tokens,
        "threads": torch.get_num_threads(),
        "load": round(os.getloadavg()[0], 2),
        "matmul_share": round(matmul / total, 3),
        "top_ops": [
            {"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
            for e in rows
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--question-file", required=True)
    parser.add_argument("--image-folder", required=True)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    report = profile(args)
    write_json(args.out, report)
    for row in report["top_ops"]:
        print(f"{row['self_cpu_share']:6.1%}  {row['calls']:7d}  {row['op']}")
    print(f"matmul share of self CPU time: {report['matmul_share']:.1%} (load {report['load']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

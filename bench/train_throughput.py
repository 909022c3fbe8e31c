"""Training throughput (samples/s, tokens/s) per stage, with and without modality-length grouping.

Runs the real training stack in-process (``setup_model`` + ``LazySupervisedDataset`` + the Trainer,
no DeepSpeed) on random parts of two sizes, over a generated LLaVA-format set that mixes image and
text-only samples with widely varying reply lengths (where grouping matters):

- ``tiny``: CLIP 56 px / patch 14 / width 32 / 4 blocks (16 image tokens), Llama width 32 / 2 layers.
- ``small``: CLIP 112 px / patch 14 / width 128 / 6 blocks (64 image tokens), Llama width 256 / 4 layers.

Tokens/s counts real (non-padding) tokens, image tokens included; ``pad_fraction`` is the share of the
batches' positions that were padding. ``*_per_cpu_s`` divide by the process's CPU time instead of wall
time; the fastest of ``--repeats`` runs is kept, after one untimed warm-up run per size (the first run in a
process pays one-time costs). ``load_average_1min`` records how busy the machine was.
Each run is one epoch (stage 1: over the image samples only); the first ``--warmup`` steps are not timed.

    python bench/train_throughput.py --warmup 2 --json /tmp/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    TrainerCallback,
)

from llava_vitsplit.data.collator import SupervisedCollator
from llava_vitsplit.data.dataset import LazySupervisedDataset
from llava_vitsplit.testing.tiny_parts import save_tiny_parts, tiny_adapter_args, tokenizer_corpus
from llava_vitsplit.tokenizers import load_tokenizer, train_llama_sentencepiece
from llava_vitsplit.train.arguments import parse_args
from llava_vitsplit.train.model_setup import setup_model
from llava_vitsplit.train.trainer import LlavaViTSplitTrainer

SHIPPED_DATA = (
    Path(__file__).resolve().parents[1] / "tests" / "data"
)  # the records and images shipped with the tests
ADAPTER = tiny_adapter_args()
WORDS = (
    "the a red blue green yellow circle square triangle shape picture shows on of background is it".split()
)


def save_small_parts(out: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    vision = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=128, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4,
            image_size=112, patch_size=14,
        )
    )  # fmt: skip
    vision.save_pretrained(out / "vision")
    CLIPImageProcessor(size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112}).save_pretrained(
        out / "vision"
    )
    spm = train_llama_sentencepiece(out / "spm", tokenizer_corpus(sorted(SHIPPED_DATA.glob("*.json"))), 512)
    tokenizer = load_tokenizer(str(spm))
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
        )
    )  # fmt: skip
    llm.save_pretrained(out / "llm")
    for name in ("tokenizer.model", "tokenizer_config.json"):
        (out / "llm" / name).write_bytes((spm / name).read_bytes())
    return {"vision": out / "vision", "llm": out / "llm"}


def make_dataset(out: Path, n: int = 256, text_fraction: float = 0.25) -> tuple[Path, Path]:
    """Image + text-only conversations whose reply lengths range from 3 to 300 words."""
    rng = random.Random(0)
    images = sorted((SHIPPED_DATA / "images").glob("*.png"))
    records = []
    for i in range(n):
        reply = " ".join(rng.choice(WORDS) for _ in range(int(3 * 100 ** rng.random())))
        record = {
            "id": f"b{i}",
            "conversations": [{"from": "human", "value": "Describe it."}, {"from": "gpt", "value": reply}],
        }
        if rng.random() >= text_fraction:
            record["image"] = str(rng.choice(images).relative_to(SHIPPED_DATA))
            record["conversations"][0]["value"] = "<image>\nDescribe it."
        records.append(record)
    path = out / "bench.json"
    path.write_text(json.dumps(records))
    return path, SHIPPED_DATA


class Meter(TrainerCallback):
    """Wall-clock and process CPU time from the first timed step to the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = self.cpu_start = self.cpu_end = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.end, self.cpu_end = time.perf_counter(), time.process_time()


class CountingCollator(SupervisedCollator):
    """Counts real and padded positions of the batches (recorded per batch, in order)."""

    def __call__(self, items):
        batch = super().__call__(items)
        self.log.append((len(items), int(batch["attention_mask"].sum()), batch["attention_mask"].numel()))
        return batch


def run(parts, data_path, image_folder, stage: str, grouped: bool, warmup: int, batch: int, out: Path):
    """One epoch over the set (stage 1: its image samples); every batch after ``warmup`` is timed."""
    stage_args = (
        ["--tune_mm_mlp_adapter", "True", "--version", "plain"]
        if stage == "1"
        else ["--version", "vicuna_v1"]
    )
    model_args, data_args, training_args = parse_args(
        ["--model_name_or_path", str(parts["llm"]), "--vision_tower", str(parts["vision"]),
         "--data_path", str(data_path), "--image_folder", str(image_folder), "--output_dir", str(out),
         "--per_device_train_batch_size", str(batch), "--num_train_epochs", "1", "--learning_rate", "1e-4",
         "--group_by_modality_length", str(grouped), "--save_strategy", "no", "--report_to", "none",
         "--logging_steps", "1000", "--dataloader_num_workers", "0", "--disable_tqdm", "True",
         "--model_max_length", "1024", *ADAPTER, *stage_args]
    )  # fmt: skip
    training_args.remove_unused_columns = False
    model, processor, _, version = setup_model(model_args, data_args, training_args)
    dataset = LazySupervisedDataset(
        data_path,
        processor,
        image_folder=image_folder,
        template=version,
        model_max_length=1024,
        require_image=stage == "1",
    )
    collator = CountingCollator(pad_token_id=processor.tokenizer.pad_token_id)
    collator.log = []
    meter = Meter(warmup)
    trainer = LlavaViTSplitTrainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=collator, callbacks=[meter]
    )
    trainer.train()
    seconds, cpu_seconds = meter.end - meter.start, meter.cpu_end - meter.cpu_start
    timed = collator.log[warmup : trainer.state.global_step]
    samples, real, total = (sum(x[i] for x in timed) for i in range(3))
    return {
        "load_average_1min": round(os.getloadavg()[0], 2),
        "stage": stage,
        "group_by_modality_length": grouped,
        "steps_timed": len(timed),
        "samples_per_s": round(samples / seconds, 2),
        "tokens_per_s": round(real / seconds, 1),
        "samples_per_cpu_s": round(samples / cpu_seconds, 2),
        "tokens_per_cpu_s": round(real / cpu_seconds, 1),
        "pad_fraction": round(1 - real / total, 3),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=["tiny", "small"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration; the fastest is kept")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_path, image_folder = make_dataset(tmp)
        for size in args.sizes:
            parts = (
                save_tiny_parts(tmp / "tiny", SHIPPED_DATA)
                if size == "tiny"
                else save_small_parts(tmp / "small")
            )
            run(
                parts, data_path, image_folder, "2", False, args.warmup, args.batch_size, tmp / "out"
            )  # untimed warm-up
            for stage in ("1", "2"):
                for grouped in (False, True):
                    row = run(
                        parts,
                        data_path,
                        image_folder,
                        stage,
                        grouped,
                        args.warmup,
                        args.batch_size,
                        tmp / "out",
                    )
                    row["size"] = size
                    results.append(row)
                    print(json.dumps(row), flush=True)
    report = {
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}, {args.threads} threads",
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "results": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Where a quickstart stage-2 step's time goes: forward, backward, optimizer, and the top operators.

Loads a quickstart checkpoint (``checkpoints/quickstart/checkpoint``: a full model and its processor),
draws real stage-2 batches of easy-vqa (``playground/data/easy_vqa/stage2_instruct.json``) through the
training dataset and collator, and times full fine-tune steps as stage 2 runs them (connector + whole
LLM trainable, frozen tower, AdamW), in fp32 or under bf16 CPU autocast (``--precision auto``: the choice
of ``llava_vitsplit.util.cpu_precision``). Reports per phase the wall and process CPU seconds (CPU time
is less disturbed by other jobs on a shared box), the batch's tokens, padding and the share of tokens
that are the chat template's default system prompt, and a ``torch.profiler`` table of one step.

    .venv/bin/python bench/quickstart_step_profile.py --checkpoint checkpoints/quickstart/checkpoint --steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import torch


def phase_times(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def batches(processor, data: str, images: str, batch: int, count: int):
    from llava_vitsplit.data.collator import SupervisedCollator
    from llava_vitsplit.data.dataset import LazySupervisedDataset

    dataset = LazySupervisedDataset(data, processor, image_folder=images, template="auto")
    collate = SupervisedCollator(pad_token_id=processor.tokenizer.pad_token_id)
    return [collate([dataset[i * batch + j] for j in range(batch)]) for i in range(count)]


def system_prompt_tokens(processor) -> int:
    system = processor.family.default_system
    if not system:
        return 0
    return len(processor.tokenizer(f"<|im_start|>system\n{system}<|im_end|>\n")["input_ids"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/quickstart/checkpoint")
    parser.add_argument("--data", default="playground/data/easy_vqa/stage2_instruct.json")
    parser.add_argument("--images", default="playground/data/easy_vqa/images")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from llava_vitsplit.stages import apply_stage
    from llava_vitsplit.util.cpu_precision import cpu_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    choice = cpu_precision()
    bf16 = choice.bf16 if args.precision == "auto" else args.precision == "bf16"
    processor = AutoProcessor.from_pretrained(args.checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(args.checkpoint, dtype=torch.float32)
    apply_stage(model, "finetune", False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    data = batches(processor, args.data, args.images, args.batch, args.steps + 1)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step(batch, record: dict | None = None) -> None:
        inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        out = {}

        def forward():
            with autocast:
                out["loss"] = model(**inputs).loss

        def backward():
            out["loss"].backward()

        def update():
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for name, fn in (("forward", forward), ("backward", backward), ("optimizer", update)):
            wall, cpu = phase_times(fn)
            if record is not None:
                record.setdefault(name, []).append((wall, cpu))

    step(data[0])  # warm-up
    record: dict = {}
    for batch in data[1:]:
        step(batch, record)
    mask = torch.cat([b["attention_mask"] for b in data[1:]])  # [steps*B, T]
    tokens, positions = int(mask.sum()), mask.numel()
    print(f"precision: {'bf16 autocast' if bf16 else 'fp32'} (this CPU: {choice.describe()})")
    print(f"threads {torch.get_num_threads()}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        f"batch {args.batch}: {positions / args.steps:.0f} positions per step, padding "
        f"{1 - tokens / positions:.1%}, default system prompt {system_prompt_tokens(processor)} tokens per "
        f"sample = {system_prompt_tokens(processor) * mask.shape[0] / tokens:.1%} of the real tokens"
    )
    total = 0.0
    for name, values in record.items():
        wall = statistics.mean(v[0] for v in values)
        cpu = statistics.mean(v[1] for v in values)
        total += wall
        print(f"{name:<10} wall {wall:6.2f} s   process CPU {cpu:6.2f} s")
    print(f"{'step':<10} wall {total:6.2f} s")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(data[1])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()

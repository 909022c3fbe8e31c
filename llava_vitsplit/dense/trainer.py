"""Training loop on ``accelerate``: one code path for one CPU, one GPU or many (``accelerate launch``).

Builds the frozen backbone and the preset's model, AdamW with the task-head lr multiplier, a poly or
one-cycle schedule, optional AMP (``mixed_precision``), and writes atomic checkpoints that ``resume``
picks up (trainable weights, optimiser, scheduler, step and RNG state). Evaluation runs on the main
process at ``eval_interval`` and at the end; results go to ``<output_dir>/log.jsonl`` and ``eval.json``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from llava_vitsplit.dense.build import build_backbone, build_detector, build_model
from llava_vitsplit.dense.checkpoint import (
    FORMAT,
    backbone_source,
    frozen_prefix,
    latest_checkpoint,
    load_checkpoint,
    load_trainable,
    prune_checkpoints,
    save_atomic,
    split_state,
)
from llava_vitsplit.dense.evaluation import evaluate_dense, evaluate_detection
from llava_vitsplit.dense.losses import segmentation_loss, sig_loss
from llava_vitsplit.dense.optim import build_optimizer, build_scheduler
from llava_vitsplit.dense.pipeline import build_dataset, collate
from llava_vitsplit.dense.presets import DensePreset


@dataclass
class TrainArgs:
    preset: DensePreset
    data_root: str
    output_dir: str
    backbone_weights: str | None = None
    layout: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    max_iters: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    num_workers: int = 2
    mixed_precision: str = "no"
    cpu: bool = False
    eval_interval: int = 0
    max_eval_images: int | None = None
    save_interval: int = 1000
    keep_checkpoints: int = 2
    log_interval: int = 50
    seed: int = 0
    resume: bool = True
    grad_clip: float | None = None


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def build_for_preset(preset: DensePreset, backbone_weights: str | None, source: dict | None = None):
    """``(model, backbone)`` for a preset; ``source`` (from a checkpoint) restores a random tower's weights."""
    backbone = build_backbone(preset.backbone, backbone_weights)
    if source is not None and source.get("state_dict") is not None:
        backbone.load_state_dict(source["state_dict"])
    model = (
        build_detector(preset, backbone) if preset.task == "detection" else build_model([preset], backbone)
    )
    return model, backbone


def _loss(model, preset: DensePreset, batch) -> torch.Tensor:
    if preset.task == "detection":
        images, targets = batch
        losses = model(images, targets)
        return sum(losses.values())
    outputs = model(batch["pixel_values"])[preset.name]  # [B, K, H, W]
    if preset.task == "segmentation":
        return segmentation_loss(outputs, batch["labels"], preset.ignore_index)
    return sig_loss(outputs, batch["depth"], preset.min_depth, preset.max_depth)


def _infinite(loader: DataLoader, start_epoch: int):
    """Batches forever; shuffling draws from the global RNG, which a resumed run restores."""
    epoch = start_epoch
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def train(args: TrainArgs) -> dict[str, Any]:
    """Train (or resume) and return the last evaluation (empty without a validation split)."""
    preset = args.preset
    max_iters = args.max_iters or preset.max_iters
    batch_size = args.batch_size or preset.batch_size
    output = Path(args.output_dir)
    ckpt_dir = output / "checkpoints"
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu)
    set_seed(args.seed)

    resume_from = latest_checkpoint(ckpt_dir) if args.resume else None
    payload = load_checkpoint(resume_from) if resume_from is not None else None
    if payload is not None:
        saved = DensePreset.from_dict(payload["presets"][0])
        if saved.name != preset.name or saved.task != preset.task:
            raise ValueError(f"{resume_from} was written for preset {saved.name!r}, not {preset.name!r}")
        preset = saved
    source = payload["backbone"] if payload is not None else None
    weights = args.backbone_weights or (source or {}).get("weights")
    model, backbone = build_for_preset(preset, weights, source)

    train_set = build_dataset(preset, args.data_root, args.train_split, train=True, layout=args.layout)
    val_set = None
    if args.val_split:
        try:
            val_set = build_dataset(preset, args.data_root, args.val_split, train=False, layout=args.layout)
        except FileNotFoundError as exc:
            accelerator.print(f"no validation set ({exc}); evaluation skipped")
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_set) >= batch_size,
        num_workers=args.num_workers,
        collate_fn=collate,
        persistent_workers=args.num_workers > 0,
    )
    optimizer = build_optimizer(model, preset, args.lr)
    scheduler = build_scheduler(optimizer, preset.schedule, max_iters, preset.poly_power, preset.warmup_iters)
    prefix = frozen_prefix(preset.task)
    step = 0
    if payload is not None:
        load_trainable(model, payload["model"], prefix, payload["path"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        step = int(payload["step"])
        _set_rng_state(payload["rng"])
        accelerator.print(f"resumed from {payload['path']} at step {step}")
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    output.mkdir(parents=True, exist_ok=True)
    (output / "preset.json").write_text(json.dumps(preset.to_dict(), indent=2))
    log_path = output / "log.jsonl"

    def log(record: dict[str, Any]) -> None:
        if accelerator.is_main_process:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def save(at_step: int) -> None:
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return
        unwrapped = accelerator.unwrap_model(model)
        save_atomic(
            {
                "format": FORMAT,
                "presets": [preset.to_dict()],
                "backbone": backbone_source(preset.backbone, weights, backbone),
                "model": split_state(unwrapped, prefix),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": at_step,
                "rng": _rng_state(),
            },
            ckpt_dir / f"step-{at_step:07d}.pt",
        )
        prune_checkpoints(ckpt_dir, args.keep_checkpoints)

    def evaluate() -> dict[str, Any]:
        if val_set is None or not accelerator.is_main_process:
            return {}
        unwrapped = accelerator.unwrap_model(model)
        if preset.task == "detection":
            result = evaluate_detection(unwrapped, val_set, accelerator.device, args.max_eval_images)
        else:
            result = evaluate_dense(unwrapped, preset, val_set, accelerator.device, args.max_eval_images)
        log({"step": step, "eval": result})
        return result

    model.train()
    batches = _infinite(loader, step // max(len(loader), 1))
    last_eval: dict[str, Any] = {}
    tic, window_loss, window = time.perf_counter(), 0.0, 0
    while step < max_iters:
        batch = next(batches)
        with accelerator.autocast():
            loss = _loss(model, preset, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
        accelerator.backward(loss)
        if args.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_loss += float(loss.detach())
        window += 1
        if step % args.log_interval == 0 or step == max_iters:
            elapsed = time.perf_counter() - tic
            record = {
                "step": step,
                "loss": window_loss / window,
                "lr": scheduler.get_last_lr()[0],
                "sec_per_iter": elapsed / window,
            }
            accelerator.print(json.dumps(record))
            log(record)
            tic, window_loss, window = time.perf_counter(), 0.0, 0
        if args.eval_interval and step % args.eval_interval == 0 and step < max_iters:
            last_eval = evaluate()
        if args.save_interval and step % args.save_interval == 0 and step < max_iters:
            save(step)
    save(step)
    last_eval = evaluate() or last_eval
    if accelerator.is_main_process and last_eval:
        (output / "eval.json").write_text(json.dumps({"step": step, **last_eval}, indent=2))
    return last_eval

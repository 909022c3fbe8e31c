"""Training loop on ``accelerate``: one code path for one CPU, one GPU or many (``accelerate launch``).

Builds the frozen backbone and the preset's model, AdamW with the task-head lr multiplier, a poly or
one-cycle schedule and optional AMP (``mixed_precision``). Before anything is built, every sample of the
train and validation splits is checked (``dense.validate``, cached in ``<output_dir>/data_check/``): a
problem stops the run with the full list, or with ``skip_bad_samples`` those samples are left out and
counted. Checkpoints (``dense.checkpoint``) hold the trainable weights, optimiser, scheduler, sampler
position, log window and every process's RNG, so a killed run resumes exactly where its last checkpoint
was (``dense.resume``): the same batches, augmentations and losses as an uninterrupted run, and
``log.jsonl`` cut back to that step. Evaluation runs on the main process at ``eval_interval`` and at the
end; results go to ``<output_dir>/log.jsonl`` and ``eval.json``.

On several processes (``accelerate launch --num_processes N``) every ``BatchNorm2d`` becomes a
``SyncBatchNorm2d`` (``dense.sync_batchnorm``; the released configs' ``SyncBN``), each process takes its own
``batch_size`` samples of the step's global batch, and the logged loss is the mean over the processes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from llava_vitsplit.backbones.normalization import backbone_normalization
from llava_vitsplit.backbones.registry import Normalization
from llava_vitsplit.dense.build import build_backbone, build_task_model
from llava_vitsplit.dense.checkpoint import (
    backbone_source,
    latest_checkpoint,
    load_checkpoint,
    load_rng_file,
    load_trainable,
    load_trainer_state,
    prune_checkpoints,
    recorded_normalization,
    save_checkpoint,
    save_rng_file,
    split_state,
    step_folder,
)
from llava_vitsplit.dense.optim import build_optimizer, build_scheduler
from llava_vitsplit.dense.pipeline import build_dataset
from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.resume import (
    BatchStream,
    EpochSampler,
    SeededSamples,
    cut_log,
    rng_state,
    set_rng_state,
)
from llava_vitsplit.dense.sync_batchnorm import convert_sync_batchnorm
from llava_vitsplit.dense.tasks import DenseTaskSpec, task_spec
from llava_vitsplit.dense.validate import BadDataError, DataReport, cached_validation
from llava_vitsplit.util.atomic import remove_stale_temporaries, write_json


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
    skip_bad_samples: bool = False


def build_for_preset(
    preset: DensePreset,
    backbone_weights: str | None,
    normalization: Normalization,
    source: dict | None = None,
):
    """``(model, backbone)`` for a preset; ``source`` (from a checkpoint) restores a random tower's weights."""
    backbone = build_backbone(preset.backbone, backbone_weights)
    if source is not None and source.get("state_dict") is not None:
        backbone.load_state_dict(source["state_dict"])
    return build_task_model(preset, backbone, normalization), backbone


def run_normalization(preset: DensePreset, weights: str | None, source: dict | None) -> Normalization:
    """The input normalisation of a run: what its checkpoint recorded when resuming, else the backbone's
    (the weights folder's ``preprocessor_config.json``, or the family's)."""
    if source is not None:
        return recorded_normalization(source)
    return backbone_normalization(preset.backbone, weights)


def _checked_datasets(
    args: TrainArgs, preset: DensePreset, accelerator: Accelerator, output: Path, normalization: Normalization
):
    """``(train_set, val_set | None)`` after checking both splits (cached); bad data raises ``BadDataError``."""
    splits = [args.train_split] + ([args.val_split] if args.val_split else [])
    reports: dict[str, DataReport] = {}
    errors: dict[str, Exception] = {}
    with accelerator.main_process_first():  # the main process checks and caches, the others read it
        for split in splits:
            try:
                reports[split] = cached_validation(
                    preset,
                    args.data_root,
                    split,
                    args.layout,
                    output / "data_check" / f"{split}.json",
                    progress=accelerator.is_main_process,
                )
            except (FileNotFoundError, ValueError) as exc:
                errors[split] = exc
    if args.train_split in errors:
        raise errors[args.train_split]
    for exc in errors.values():
        accelerator.print(f"no validation set ({exc}); evaluation skipped")
    bad = [report for report in reports.values() if not report.ok]
    if bad and not args.skip_bad_samples:
        raise BadDataError(bad)
    for report in bad:
        accelerator.print(
            f"--skip-bad-samples: leaving out {len(report.bad_samples)} sample(s); {report.summary()}"
        )
    val_set = None
    if args.val_split in reports:
        val_set = _dataset(args, preset, reports, args.val_split, False, normalization)
    return _dataset(args, preset, reports, args.train_split, True, normalization), val_set


def _dataset(
    args: TrainArgs,
    preset: DensePreset,
    reports: dict[str, DataReport],
    split: str,
    train: bool,
    normalization: Normalization,
):
    skip = reports[split].bad_samples
    return build_dataset(preset, args.data_root, split, train, args.layout, skip, normalization)


def _resumable_loader(dataset, batch_size: int, args: TrainArgs, seed: int, spec: DenseTaskSpec):
    """``(loader, sampler, generator)``: order and augmentation depend on (seed, epoch, sample) only."""
    sampler = EpochSampler(len(dataset), seed)
    generator = torch.Generator()  # seeds the workers; reseeded per epoch by BatchStream
    loader = DataLoader(
        SeededSamples(dataset),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=len(dataset) >= batch_size,
        num_workers=args.num_workers,
        collate_fn=spec.collate,
        generator=generator,
    )
    return loader, sampler, generator


def _resumed_preset(payload: dict | None, preset: DensePreset, source: Path | None) -> DensePreset:
    if payload is None:
        return preset
    saved = DensePreset.from_dict(payload["presets"][0])
    if saved.name != preset.name or saved.task != preset.task:
        raise ValueError(f"{source} was written for preset {saved.name!r}, not {preset.name!r}")
    return saved


class RunState:
    """One training run's state and its side effects: log lines, checkpoints, a step, evaluation."""

    def __init__(self, args: TrainArgs, accelerator: Accelerator, preset: DensePreset, output: Path) -> None:
        self.args, self.accelerator, self.preset, self.output = args, accelerator, preset, output
        self.spec = task_spec(preset)  # an unknown task stops the run here, before the data check
        self.max_iters = args.max_iters or preset.max_iters
        self.batch_size = args.batch_size or preset.batch_size  # per process
        self.ckpt_dir = output / "checkpoints"
        self.log_path = output / "log.jsonl"
        self.step = 0
        self.window = {"loss_sum": 0.0, "count": 0}  # losses since the last log line
        self.seed = args.seed
        self.prefix = self.spec.frozen_prefix
        self.tic = time.perf_counter()
        # set by setup(): the model, its frozen tower and where its weights come from, the optimiser,
        # the schedule, the batch stream and the validation set
        self.model = self.backbone = self.optimizer = self.scheduler = self.stream = self.val_set = None
        self.weights: str | None = None
        self.normalization: Normalization | None = None  # the inputs' mean/std, recorded in checkpoints

    def log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with self.log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def trainer_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "seed": self.seed,
            "data": self.stream.state(),
            "log_window": dict(self.window),
        }

    def save(self) -> None:
        """Every process writes its RNG into the staging folder; the main process completes and renames it."""
        acc, staging = self.accelerator, self.ckpt_dir / f".step-{self.step:07d}.tmp"
        acc.wait_for_everyone()
        if acc.is_main_process:
            remove_stale_temporaries(self.ckpt_dir)
            staging.mkdir(parents=True)
        acc.wait_for_everyone()
        save_rng_file(staging, acc.process_index, rng_state())
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return
        backbone = self.backbone.state_dict() if self.weights is None else None
        meta = {
            "step": self.step,
            "presets": [self.preset.to_dict()],
            "backbone": backbone_source(self.preset.backbone, self.weights, self.normalization),
        }
        model_state = split_state(acc.unwrap_model(self.model), self.prefix)
        final = step_folder(self.ckpt_dir, self.step)
        save_checkpoint(staging, final, meta, model_state, backbone, self.trainer_state())
        prune_checkpoints(self.ckpt_dir, self.args.keep_checkpoints)

    def restore(self, payload: dict[str, Any], state: dict[str, Any]) -> None:
        """Weights, optimiser, scheduler, log window and this process's RNG (data position: ``resume_data``)."""
        load_trainable(self.model, payload["model"], self.prefix, payload["path"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.window = dict(state.get("log_window") or self.window)
        rng = load_rng_file(payload["path"], self.accelerator.process_index)
        if rng is not None:
            set_rng_state(rng)
        self.accelerator.print(f"resumed from {payload['path']} at step {self.step}")

    def resume_data(self, state: dict[str, Any] | None, samples: int, per_step: int) -> None:
        """Put the batch stream where the checkpoint left it (old checkpoints: the epoch's start)."""
        if state is None:
            return
        if state.get("data") is not None:
            self.stream.load_state(state["data"])
            return
        steps_per_epoch = max(samples // per_step, 1)
        self.stream.load_state({"epoch": self.step // steps_per_epoch, "position": 0})
        self.accelerator.print(
            "this checkpoint has no data position (converted from the old format): the resumed run "
            "starts a fresh epoch, so it does not repeat the uninterrupted run's batches exactly"
        )

    def train_step(self) -> None:
        """One optimiser step on the next batch; a log line every ``log_interval`` steps and at the end."""
        batch = next(self.stream)
        with self.accelerator.autocast():
            loss = self.spec.loss(self.model, self.preset, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step}")
        self.accelerator.backward(loss)
        if self.args.grad_clip:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.window["loss_sum"] += float(self.accelerator.reduce(loss.detach(), reduction="mean"))
        self.window["count"] += 1
        if self.step % self.args.log_interval == 0 or self.step == self.max_iters:
            self.log_window()

    def log_window(self) -> None:
        elapsed = time.perf_counter() - self.tic
        count = self.window["count"]
        record = {
            "step": self.step,
            "loss": self.window["loss_sum"] / count,
            "lr": self.scheduler.get_last_lr()[0],
            "sec_per_iter": elapsed / count,
        }
        self.accelerator.print(json.dumps(record))
        self.log(record)
        self.tic, self.window = time.perf_counter(), {"loss_sum": 0.0, "count": 0}

    def evaluate(self) -> dict[str, Any]:
        """The task's metrics on the validation set (main process; logged), or ``{}``."""
        if self.val_set is None or not self.accelerator.is_main_process:
            return {}
        unwrapped, device = self.accelerator.unwrap_model(self.model), self.accelerator.device
        result = self.spec.evaluate(unwrapped, self.preset, self.val_set, device, self.args.max_eval_images)
        self.log({"step": self.step, "eval": result})
        return result


def _start(args: TrainArgs, accelerator: Accelerator, output: Path):
    """Clear what a killed run left; ``(payload, trainer_state, preset)`` of the checkpoint to resume."""
    ckpt_dir = output / "checkpoints"
    if accelerator.is_main_process:
        for folder in (ckpt_dir, output, output / "data_check"):
            for path in remove_stale_temporaries(folder):
                accelerator.print(f"removed {path}, left by an interrupted run")
    accelerator.wait_for_everyone()
    resume_from = latest_checkpoint(ckpt_dir) if args.resume else None
    payload = load_checkpoint(resume_from) if resume_from is not None else None
    state = load_trainer_state(resume_from) if resume_from is not None else None
    return payload, state, _resumed_preset(payload, args.preset, resume_from)


def setup(args: TrainArgs) -> RunState:
    """Check the data, build (or restore) model, optimiser, schedule and batch stream: a run ready to step."""
    output = Path(args.output_dir)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu)
    set_seed(args.seed)
    payload, state, preset = _start(args, accelerator, output)
    run = RunState(args, accelerator, preset, output)
    run.seed = int(state["seed"]) if state is not None and "seed" in state else args.seed
    source = payload["backbone"] if payload is not None else None
    run.weights = args.backbone_weights or (source or {}).get("weights")
    run.normalization = run_normalization(preset, run.weights, source)
    train_set, run.val_set = _checked_datasets(args, preset, accelerator, output, run.normalization)

    run.model, run.backbone = build_for_preset(preset, run.weights, run.normalization, source)
    if accelerator.num_processes > 1:  # the released configs' SyncBN: statistics of the global batch
        run.model = convert_sync_batchnorm(run.model)
    loader, sampler, generator = _resumable_loader(train_set, run.batch_size, args, run.seed, run.spec)
    run.optimizer = build_optimizer(run.model, preset, args.lr)
    run.scheduler = build_scheduler(
        run.optimizer, preset.schedule, run.max_iters, preset.poly_power, preset.warmup_iters
    )
    if payload is not None:
        run.restore(payload, state)
    run.model, run.optimizer, loader = accelerator.prepare(run.model, run.optimizer, loader)
    per_step = run.batch_size * accelerator.num_processes
    run.stream = BatchStream(loader, sampler, generator, per_step)
    run.resume_data(state, len(train_set), per_step)
    if accelerator.is_main_process:
        cut_log(run.log_path, run.step)
        write_json(output / "preset.json", preset.to_dict())
    return run


def train(args: TrainArgs) -> dict[str, Any]:
    """Train (or resume) and return the last evaluation (empty without a validation split)."""
    run = setup(args)
    last_eval: dict[str, Any] = {}
    run.model.train()
    run.tic = time.perf_counter()
    while run.step < run.max_iters:
        run.train_step()
        if _due(args.eval_interval, run):
            last_eval = run.evaluate()
        if _due(args.save_interval, run):
            run.save()
    run.save()
    last_eval = run.evaluate() or last_eval
    if run.accelerator.is_main_process and last_eval:
        write_json(run.output / "eval.json", {"step": run.step, **last_eval})
    return last_eval


def _due(interval: int, run: RunState) -> bool:
    """Every ``interval`` steps (0: never) before the last step (which always evaluates and saves)."""
    return bool(interval) and run.step % interval == 0 and run.step < run.max_iters

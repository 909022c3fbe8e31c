"""Preemption and non-finite guards: decided once per optimizer step, by all ranks together.

``StepGuard`` is a ``TrainerCallback``. Right before each optimizer step (``on_pre_optimizer_step``)
every rank contributes two flags to one all-reduce (max):

- **stop**: this rank received SIGTERM or SIGUSR1 (schedulers such as SLURM send them before killing a
  job; ``--signal=B:USR1@120`` sends USR1 two minutes ahead). Every rank finishes the current step, the
  step's checkpoint is written (atomically, ``LlavaViTSplitTrainer._save_checkpoint``) and training
  stops; ``llava-vitsplit train`` then exits with ``EXIT_PREEMPTED`` (75) and the job is requeued with
  ``--resume_from_checkpoint latest``. One rank receiving the signal is enough: the all-reduce makes every
  rank stop at the same step. (transformers' own ``enable_jit_checkpoint`` decides per rank, after a
  timer, so ranks may save at different steps and the collective save hangs.)
- **non-finite**: this rank's loss or the gradient norm is inf or NaN. The optimizer step is skipped on
  every rank: no weight update and untouched optimizer state (plain PyTorch: the gradients are dropped,
  so the optimizer passes over every parameter; DeepSpeed ZeRO skips a step whose gradient norm is not
  finite in fp32 and bf16, and a non-finite loss is given a NaN gradient so that it does; a DeepSpeed
  config that switched that check off is an error at the first such step). The step still
  counts (``global_step``), is logged with its sample ids (``log_history``: ``nonfinite_step``) and writes
  no checkpoint; after ``--max_nonfinite_steps`` such steps in a row training stops, the last checkpoint
  written stays the latest, and ``llava-vitsplit train`` exits with ``EXIT_NONFINITE`` (3).

The learning-rate schedule advances on a skipped step under plain PyTorch and holds under DeepSpeed
(its overflow skip), as the Trainer does for each.
"""

from __future__ import annotations

import logging
import math
import signal

import torch
import torch.distributed as dist
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a checkpoint was written, requeue with --resume_from_checkpoint latest
EXIT_NONFINITE = 3  # stopped after --max_nonfinite_steps non-finite steps in a row; do not requeue as is
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
DEFAULT_MAX_NONFINITE = 3


def _grads_finite(model: torch.nn.Module) -> bool:
    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return bool(torch.isfinite(torch.stack(norms).norm())) if norms else True


class StepGuard(TrainerCallback):
    """The per-step stop / non-finite decision (see the module docstring); ``outcome`` says why it stopped."""

    def __init__(self, trainer, max_nonfinite_steps: int) -> None:
        self.trainer = trainer
        self.max_nonfinite_steps = max_nonfinite_steps
        self.stop_signal: str | None = None  # set by the signal handler of this rank
        self.outcome: str | None = None  # "preempted" | "nonfinite" once training was stopped
        self.nonfinite_in_a_row = 0
        self._previous_handlers: dict[int, object] = {}
        self._reset_step()

    def _reset_step(self) -> None:
        self.loss_nonfinite = False  # this rank, the current optimizer step
        self.sample_ids: list[str] = []
        self.step_nonfinite = self.stop_agreed = False

    # -- fed by the trainer --------------------------------------------------------------------------
    def saw_micro_batch(self, loss: torch.Tensor, sample_ids: list[str]) -> None:
        self.sample_ids.extend(sample_ids)
        if not bool(torch.isfinite(loss.detach()).all()):
            self.loss_nonfinite = True

    # -- signals -------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal is None:
            logger.warning("%s received: finishing this step, then checkpointing and stopping", name)
        self.stop_signal = name

    def on_train_begin(self, args, state, control, **kwargs):
        for signum in STOP_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def on_train_end(self, args, state, control, **kwargs):
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    # -- the per-step decision -----------------------------------------------------------------------
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        engine = self.trainer.model_wrapped if self.trainer.is_deepspeed_enabled else None
        if engine is not None:  # DeepSpeed stepped inside backward(); it skipped a non-finite norm
            norm = engine.get_global_grad_norm()
            grads_finite = norm is None or math.isfinite(float(norm))
        else:
            grads_finite = _grads_finite(model)
        flags = torch.tensor(
            [float(self.stop_signal is not None), float(self.loss_nonfinite or not grads_finite)],
            device=args.device,
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        self.stop_agreed, self.step_nonfinite = bool(flags[0] > 0), bool(flags[1] > 0)
        if self.step_nonfinite and engine is None:
            for param in model.parameters():
                param.grad = None  # the optimizer passes over parameters without a gradient
        elif self.step_nonfinite and not getattr(engine.optimizer, "overflow", True):
            raise FloatingPointError(
                f"step {state.global_step + 1}: DeepSpeed applied a non-finite optimizer step (its overflow "
                'check is off: set "bf16": {"check_grad_overflow": true} in the DeepSpeed config)'
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.step_nonfinite:
            self._record_nonfinite(state, control)
        else:
            self.nonfinite_in_a_row = 0
        if self.stop_agreed and self.outcome is None:
            logger.warning(
                "stopping at step %d on a scheduler signal; writing its checkpoint", state.global_step
            )
            self.outcome = "preempted"
            control.should_save = True
            control.should_training_stop = True
        self._reset_step()

    def _record_nonfinite(self, state, control) -> None:
        self.nonfinite_in_a_row += 1
        sample_ids = self.sample_ids
        if dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, sample_ids)
            sample_ids = [sample for rank_ids in gathered for sample in rank_ids]
        state.log_history.append(
            {"step": state.global_step, "nonfinite_step": self.nonfinite_in_a_row, "sample_ids": sample_ids}
        )
        logger.warning(
            "step %d: non-finite loss or gradient norm, optimizer step skipped (%d in a row, at most %d); "
            "samples: %s",
            state.global_step,
            self.nonfinite_in_a_row,
            self.max_nonfinite_steps,
            ", ".join(sample_ids),
        )
        control.should_save = False  # a checkpoint is only written at a step that trained
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            logger.error(
                "%d non-finite steps in a row: stopping; the last checkpoint written is the last good one",
                self.nonfinite_in_a_row,
            )
            self.outcome = "nonfinite"
            control.should_training_stop = True


class WithSampleIds:
    """Wraps a collator: the items' ``sample_id`` entries become the batch's ``sample_ids`` list."""

    def __init__(self, collator) -> None:
        self.collator = collator

    def __call__(self, items: list[dict]) -> dict:
        sample_ids = [str(item.pop("sample_id", "?")) for item in items]
        batch = self.collator(items)
        batch["sample_ids"] = sample_ids
        return batch

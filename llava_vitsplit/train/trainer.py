"""The transformers ``Trainer`` with what LLaVA-style training on a cluster needs on top of it.

- ``--group_by_modality_length``: the modality/length-grouped sampler (one optimizer step = one modality).
- Learning-rate groups: the connector can get its own lr (``--connector_lr``, LLaVA's
  ``--mm_projector_lr``) and the ViT-Split task head and the deformable convs' offset predictors multipliers of it (``--task_head_lr_multiplier``,
  ``--deform_offset_lr_multiplier``), each split into decay / no-decay groups. With
  ZeRO optimizer offload the same groups go to DeepSpeed's CPU Adam (the DeepSpeed configs define no
  optimizer, so these groups always apply).
- Atomic checkpoints: a checkpoint is written under ``<output_dir>/.staging/checkpoint-N`` and renamed to
  ``<output_dir>/checkpoint-N`` only when complete, so a run killed while saving never leaves a partial
  ``checkpoint-N`` for ``--resume_from_checkpoint`` to trip over. A save that fails for lack of space
  raises "no space left on <output_dir>", removes its partial copy and keeps the last good checkpoint.
- The step guard (``train.step_guard``): preemption signals and non-finite losses or gradient norms,
  decided by all ranks together at each optimizer step; ``compute_loss`` feeds it each micro-batch's loss
  and sample ids (the ``sample_ids`` batch entry, never passed to the model) and gives a non-finite loss a
  NaN gradient, so that DeepSpeed's own check skips the step too.
- Fault injection (``train.faults``, ``LLAVA_VITSPLIT_FAULT``) for the recovery tests.
"""

from __future__ import annotations

import logging
import os
import shutil

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints

from llava_vitsplit.data.sampler import ModalityLengthGroupedSampler
from llava_vitsplit.stages import lr_group_modules
from llava_vitsplit.train.faults import configured_fault, inject_in_save, inject_in_step
from llava_vitsplit.train.step_guard import DEFAULT_MAX_NONFINITE, StepGuard
from llava_vitsplit.train.storage import NoSpaceLeft, reporting_full_disk

logger = logging.getLogger(__name__)

STAGING_DIR = ".staging"
LR_KINDS = ("task_head", "offset", "connector")  # the most specific first: a task head is connector too


class LlavaViTSplitTrainer(Trainer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fault = configured_fault()
        self.step_guard = StepGuard(self, getattr(self.args, "max_nonfinite_steps", DEFAULT_MAX_NONFINITE))
        self.add_callback(self.step_guard)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sample_ids = inputs.pop("sample_ids", [])
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        loss = inject_in_step(self.fault, self.state.global_step + 1, loss)
        self.step_guard.saw_micro_batch(loss, sample_ids)
        if not bool(torch.isfinite(loss.detach()).all()):
            loss = loss * float("nan")  # NaN gradients: every backend's non-finite check skips the step
        return (loss, *result[1:]) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if getattr(self.args, "group_by_modality_length", False) and hasattr(dataset, "modality_lengths"):
            return ModalityLengthGroupedSampler(
                dataset.modality_lengths,
                batch_size=self.args.train_batch_size,
                world_size=self.args.world_size * self.args.gradient_accumulation_steps,
                seed=self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    # -- learning-rate groups --------------------------------------------------------------------------
    def parameter_groups(self, model) -> list[dict]:
        """Trainable parameters grouped by (lr, weight decay); empty groups are left out.

        A parameter's lr kind comes from the module it belongs to (``stages.lr_group_modules``: parameter
        identity, which ZeRO-3 partitioning keeps); every parameter outside the connector is ``llm``."""
        args = self.args
        decay_names = set(self.get_decay_parameter_names(model))
        connector_lr = args.connector_lr if args.connector_lr is not None else args.learning_rate
        lrs = {
            "llm": args.learning_rate,
            "connector": connector_lr,
            "task_head": connector_lr * args.task_head_lr_multiplier,
            "offset": connector_lr * args.deform_offset_lr_multiplier,
        }
        kind_of: dict[int, str] = {}
        groups = lr_group_modules(model)
        for kind in reversed(LR_KINDS):  # the most specific kind written last wins
            kind_of.update({id(p): kind for module in groups[kind] for p in module.parameters()})
        buckets: dict[tuple[str, bool], list] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                kind = kind_of.get(id(param), "llm")
                buckets.setdefault((kind, name in decay_names), []).append(param)
        return [
            {"params": params, "lr": lrs[kind], "weight_decay": args.weight_decay if decay else 0.0}
            for (kind, decay), params in sorted(buckets.items())
        ]

    def optimizer_offloaded(self) -> bool:
        """ZeRO offloads the optimizer to CPU/NVMe (then DeepSpeed's CPU Adam must run the step)."""
        ds_config = getattr(self.args, "hf_deepspeed_config", None)
        if ds_config is None:
            return False
        return ds_config.get_value("zero_optimization.offload_optimizer.device") in ("cpu", "nvme")

    def create_optimizer(self, model=None):
        args = self.args
        offload = self.optimizer_offloaded()
        plain = (
            args.connector_lr is None
            and args.task_head_lr_multiplier == 1.0
            and args.deform_offset_lr_multiplier == 1.0
        )
        if self.optimizer is not None or (plain and not offload):
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        groups = self.parameter_groups(opt_model)
        if offload:  # AdamW on the offloaded fp32 master weights, with this trainer's lr groups
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            self.optimizer = DeepSpeedCPUAdam(
                groups,
                lr=args.learning_rate,
                betas=(args.adam_beta1, args.adam_beta2),
                eps=args.adam_epsilon,
                weight_decay=args.weight_decay,
                adamw_mode=True,
            )
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # -- atomic checkpoints ----------------------------------------------------------------------------
    def _get_output_dir(self, trial):
        staging = getattr(self, "_staging_root", None)
        return staging if staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = os.path.join(run_dir, STAGING_DIR)
        if self.args.should_save:
            shutil.rmtree(os.path.join(staging_root, name), ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._staging_root = staging_root
        try:
            with reporting_full_disk(run_dir, name):
                inject_in_save(self.fault, self.state.global_step)
                super()._save_checkpoint(model, trial)
        except NoSpaceLeft as err:
            if self.args.should_save:
                shutil.rmtree(os.path.join(staging_root, name), ignore_errors=True)
            last = get_last_checkpoint(run_dir)
            kept = f"the last good checkpoint {last} is kept" if last else "no earlier checkpoint exists"
            cause = err.__cause__ or err
            raise NoSpaceLeft(run_dir, f"{name} was not saved ({cause}); {kept}") from err
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            final = os.path.join(run_dir, name)
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(os.path.join(staging_root, name), final)
            if not os.listdir(staging_root):
                os.rmdir(staging_root)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()

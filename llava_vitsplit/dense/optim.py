"""AdamW parameter groups (task-head lr multiplier, no decay on norms/biases) and lr schedules."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from llava_vitsplit.dense.presets import DensePreset


def task_head_parameter_ids(model: nn.Module) -> set[int]:
    """``id`` of every parameter in a ViT-Split task head (the copied blocks)."""
    from llava_vitsplit.adapter import TaskHead

    return {id(p) for m in model.modules() if isinstance(m, TaskHead) for p in m.parameters()}


def parameter_groups(
    model: nn.Module, lr: float, task_head_lr_mult: float, weight_decay: float
) -> list[dict]:
    """Four AdamW groups: {task head, rest} x {decay, no decay (1-d: norms, biases, layer scales)}."""
    head_ids = task_head_parameter_ids(model)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        key = (id(param) in head_ids, param.ndim > 1)
        groups.setdefault(key, []).append(param)
    out = []
    for (is_head, decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": lr * (task_head_lr_mult if is_head else 1.0),
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{'task_head' if is_head else 'heads'}{'' if decay else '_no_decay'}",
            }
        )
    if not out:
        raise ValueError("the model has no trainable parameters")
    return out


def build_optimizer(model: nn.Module, preset: DensePreset, lr: float | None = None) -> torch.optim.AdamW:
    lr = preset.lr if lr is None else lr
    return torch.optim.AdamW(
        parameter_groups(model, lr, preset.task_head_lr_mult, preset.weight_decay), lr=lr
    )


def poly_factor(step: int, max_iters: int, power: float, warmup_iters: int, min_factor: float = 0.0) -> float:
    """Linear warm-up from 1e-6 over ``warmup_iters``, then ``(1 - step / max_iters) ** power``."""
    if step < warmup_iters:
        return 1e-6 + (1.0 - 1e-6) * step / warmup_iters
    progress = min(step, max_iters) / max(max_iters, 1)
    return max((1.0 - progress) ** power, min_factor)


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, max_iters: int, power: float = 1.0, warmup_iters: int = 0
) -> LRScheduler:
    """``poly`` (with warm-up) or ``one_cycle`` (torch's ``OneCycleLR``; peak = each group's lr)."""
    if schedule == "poly":
        warmup = min(warmup_iters, max(max_iters - 1, 0))
        return LambdaLR(optimizer, lambda step: poly_factor(step, max_iters, power, warmup))
    if schedule == "one_cycle":
        peaks = [g["lr"] for g in optimizer.param_groups]
        pct = min(max(warmup_iters / max(max_iters, 1), 0.01), 0.5) if warmup_iters else 0.3
        return OneCycleLR(optimizer, max_lr=peaks, total_steps=max(max_iters, 2), pct_start=pct)
    raise ValueError(f"unknown schedule {schedule!r}; valid: poly, one_cycle")


__all__ = ["build_optimizer", "build_scheduler", "parameter_groups", "poly_factor"]

"""``DenseTaskSpec``: everything the trainer, evaluation, validation, loading and prediction ask of a task.

A task is one of two kinds:

- a **branch** task (``branch=BranchHead(...)``): a head on a ``TaskBranch`` of a ``DenseModel``, predicting
  a dense map ``[B, K, H, W]`` from the shared frozen pass (segmentation, depth). Several branch
  checkpoints on one backbone are loaded into one ``DenseModel`` and predicted from one frozen pass;
- an **own-model** task (``own_model=OwnModel(...)``): the task builds a whole model around the frozen
  tower and the adapter (detection: Mask R-CNN with the ViT-Split neck) and says how to train, evaluate
  and predict with it.

The spec's methods (``make_model``, ``loss``, ``evaluate``, ``parts``, ``frozen_prefix``) are the one
place that tells the two kinds apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from llava_vitsplit.adapter import ViTSplitAdapter
from llava_vitsplit.backbones.base import FrozenBackbone
from llava_vitsplit.backbones.registry import Normalization
from llava_vitsplit.dense.inference import predict_resized
from llava_vitsplit.dense.model import DenseModel, TaskBranch
from llava_vitsplit.dense.presets import DensePreset

# (sample, file, kind, detail) of one problem, as ``dense.validate.Problem`` takes it
ProblemTuple = tuple[str, str, str, str]


class Metric(Protocol):
    """Accumulates one image at a time; ``compute()`` gives the metrics dict."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None: ...

    def compute(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SplitFiles:
    """One split as ``dense.validate`` checks it: samples, their check, and the files a cached report covers."""

    samples: list[Any]  # one entry per sample, handed to ``check``
    check: Callable[[Any], list[ProblemTuple]]  # every problem of one sample
    paths: list[Path]  # every file whose change invalidates a cached report
    missing: list[tuple[Path, Path]] = field(default_factory=list)  # (image, absent file) of broken pairs


@dataclass(frozen=True)
class PredictOptions:
    """``dense-predict`` settings a task may use."""

    score_threshold: float = 0.5  # detection: boxes drawn and listed at or above this score


@dataclass(frozen=True)
class BranchHead:
    """A task predicted by a head on a ``DenseModel`` branch (shares the frozen pass with other branches)."""

    # (preset, adapter channels C) -> module [B, C, h, w] -> [B, K, h', w'] (resized to the input after)
    head: Callable[[DensePreset, int], nn.Module]
    # the dataset item / batch key of the target map [H, W]
    target: str
    # (pred [B, K, H, W], target [B, H, W], preset) -> scalar
    loss: Callable[[torch.Tensor, torch.Tensor, DensePreset], torch.Tensor]
    # preset -> a fresh metric; update(pred [K, H, W], target [H, W]) per image
    metric: Callable[[DensePreset], Metric]
    # what dense-predict writes: (pred [K, H, W], preset, folder, image stem)
    write: Callable[[torch.Tensor, DensePreset, Path, str], None]
    # True: training hands ``loss`` the head's map before the resize (an ``UnresizedPrediction``), so the
    # loss can resize it band by band instead of holding the full-resolution map
    loss_resizes: bool = False


@dataclass(frozen=True)
class OwnModel:
    """A task that builds its own model on the frozen tower and the adapter (Mask R-CNN)."""

    # (preset, frozen tower, adapter, the tower's input normalisation) -> the model
    build: Callable[[DensePreset, FrozenBackbone, ViTSplitAdapter, Normalization], nn.Module]
    loss: Callable[[nn.Module, Any], torch.Tensor]  # (model in train mode, collated batch) -> scalar
    evaluate: Callable[[nn.Module, Any, torch.device, int | None], dict[str, Any]]  # (model, dataset, ...)
    predict: Callable[[nn.Module, DensePreset, Any, Path, str, torch.device, PredictOptions], None]
    parts: Callable[[nn.Module], tuple[nn.Module, nn.Module, dict[str, list[nn.Module]]]]
    frozen_prefix: str  # where the frozen tower sits in the model's state dict


DatasetBuilder = Callable[[DensePreset, Path, str, bool, str, "list | None", frozenset, Normalization], Any]


@dataclass(frozen=True)
class DenseTaskSpec:
    """One dense task. ``dataset(preset, root, split, train, layout, missing, skip, normalization)`` reads
    the samples with the train or eval transforms (``missing``: a list collecting incomplete pairs instead
    of raising, or None; ``skip``: sample paths to leave out; ``normalization``: the backbone's input
    mean/std, for tasks whose transforms normalise); ``collate`` batches its items; ``split_files(preset, root,
    split, layout)`` lists a split for ``dense-validate``. Exactly one of ``branch`` / ``own_model``."""

    name: str
    dataset: DatasetBuilder
    collate: Callable[[list[Any]], Any]
    split_files: Callable[[DensePreset, Path, str, str], SplitFiles]
    needs_classes: bool = False  # presets of this task need num_classes >= 1
    branch: BranchHead | None = None
    own_model: OwnModel | None = None

    def __post_init__(self) -> None:
        if (self.branch is None) == (self.own_model is None):
            raise ValueError(f"dense task {self.name!r}: give exactly one of branch= or own_model=")

    @property
    def frozen_prefix(self) -> str:
        """Where the frozen tower sits: ``DenseModel.backbone`` or the task's own model's place for it."""
        return "backbone." if self.own_model is None else self.own_model.frozen_prefix

    def build_branch(self, preset: DensePreset, adapter: ViTSplitAdapter) -> TaskBranch:
        if self.branch is None:
            raise ValueError(
                f"preset {preset.name!r}: task {self.name!r} has its own model, not a DenseModel branch"
            )
        return TaskBranch(preset.task, adapter, self.branch.head(preset, adapter.out_channels))

    def make_model(
        self,
        preset: DensePreset,
        backbone: FrozenBackbone,
        adapter: ViTSplitAdapter,
        normalization: Normalization,
    ) -> nn.Module:
        """The model one preset trains: a one-branch ``DenseModel`` (fed normalised images) or the task's
        own model (given ``normalization``, if it normalises its inputs itself)."""
        if self.own_model is not None:
            return self.own_model.build(preset, backbone, adapter, normalization)
        return DenseModel(backbone, {preset.name: self.build_branch(preset, adapter)})

    def loss(self, model: nn.Module, preset: DensePreset, batch: Any) -> torch.Tensor:
        if self.own_model is not None:
            return self.own_model.loss(model, batch)
        assert self.branch is not None
        resize = not self.branch.loss_resizes
        pred = model(batch["pixel_values"], resize=resize)[preset.name]  # [B, K, H, W] or unresized
        return self.branch.loss(pred, batch[self.branch.target], preset)

    def evaluate(
        self, model: nn.Module, preset: DensePreset, dataset, device: torch.device, max_images: int | None
    ) -> dict[str, Any]:
        """Metrics over ``dataset`` (eval transforms); model mode restored afterwards."""
        was_training = model.training
        model.eval()
        with torch.no_grad():
            if self.own_model is not None:
                result = self.own_model.evaluate(model, dataset, device, max_images)
            else:
                result = _evaluate_branch(model, preset, self.branch, dataset, device, max_images)
        model.train(was_training)
        return result

    def parts(self, model: nn.Module) -> tuple[nn.Module, nn.Module, dict[str, list[nn.Module]]]:
        """``(adapter, head, {extra component: modules})`` of a model from ``make_model`` (parameter report)."""
        if self.own_model is not None:
            return self.own_model.parts(model)
        branch = next(iter(model.branches.values()))
        return branch.adapter, branch.head, {}


def _evaluate_branch(
    model: nn.Module, preset: DensePreset, branch: BranchHead, dataset, device, max_images: int | None
) -> dict[str, Any]:
    """Branch ``preset.name`` over the images, predictions resized to the full-size targets."""

    def predict(pixels: torch.Tensor) -> torch.Tensor:
        return model(pixels)[preset.name]  # [B, K, h, w]

    crop = preset.crop_size if preset.slide_stride else None
    metric = branch.metric(preset)
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    for index in range(count):
        item = dataset[index]
        pixels = item["pixel_values"][None].to(device)  # [1, 3, h, w]
        target = item[branch.target]  # [H, W]
        pred = predict_resized(predict, pixels, tuple(target.shape[-2:]), crop, preset.slide_stride)
        metric.update(pred[0].cpu(), target)  # [K, H, W]
    result = metric.compute()
    result["images"] = count
    return result


def collate_items(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Dict items -> one dict: tensors stacked ``[B, ...]``, anything else listed."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out

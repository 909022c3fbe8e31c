"""The ``detection`` task: torchvision Mask R-CNN with the ViT-Split neck, COCO data, COCO box / mask AP.

The model is the task's own (``OwnModel``): ``detection.build_mask_rcnn`` around the frozen tower and the
adapter; its transform normalises the [0, 1] images with the backbone's ``Normalization``. Trained on its summed RPN / RoI losses; ``dense-predict`` writes ``<image>.png`` with boxes and
masks drawn and ``<image>.json`` with the boxes, labels and scores at or above the score threshold.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from llava_vitsplit.adapter import ViTSplitAdapter
from llava_vitsplit.backbones.base import FrozenBackbone
from llava_vitsplit.backbones.registry import Normalization
from llava_vitsplit.dense.data import coco_dataset, coco_paths
from llava_vitsplit.dense.detection import build_mask_rcnn
from llava_vitsplit.dense.metrics import coco_ap, coco_results
from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks.spec import DenseTaskSpec, OwnModel, PredictOptions, SplitFiles
from llava_vitsplit.dense.validate_coco import coco_files, coco_image_problems
from llava_vitsplit.dense.visualize import save_detections
from llava_vitsplit.util.atomic import write_json


def detection_dataset(
    preset: DensePreset,
    root: Path,
    split: str,
    train: bool,
    layout: str,
    missing: list | None,
    skip: frozenset[str],
    normalization: Normalization,
):
    """COCO ``(image [3, H, W] in [0, 1], target)`` pairs; training flips horizontally. Not normalised
    here: Mask R-CNN's own transform normalises (``normalization`` is given to the model instead)."""
    transforms = [v2.RandomHorizontalFlip()] if train else []
    transforms += [
        v2.ToImage(),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.SanitizeBoundingBoxes(),
    ]
    return coco_dataset(*coco_paths(root, split), v2.Compose(transforms), skip=skip)


def collate_detection(batch: list[tuple[Any, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """``(images, targets)`` as lists of plain tensors (Mask R-CNN takes lists)."""
    images, targets = zip(*batch, strict=True)
    return [img.as_subclass(torch.Tensor) for img in images], [
        {k: (v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
        for t in targets
    ]


def detection_split(preset: DensePreset, root: Path, split: str, layout: str) -> SplitFiles:
    """Every listed image with its annotations (``validate_coco``)."""
    files = coco_files(root, split)
    return SplitFiles(
        samples=files.images,
        check=partial(coco_image_problems, files=files, num_classes=preset.num_classes),
        paths=[files.annotation_file, *files.image_paths()],
    )


def build_preset_detector(
    preset: DensePreset,
    backbone: FrozenBackbone,
    adapter: ViTSplitAdapter,
    normalization: Normalization,
    **kwargs: Any,
) -> nn.Module:
    """Mask R-CNN with ``preset.extra["detector"]`` keyword arguments (``kwargs`` override them),
    normalising its images with ``normalization``."""
    if preset.task != DETECTION.name:
        raise ValueError(f"preset {preset.name!r} is a {preset.task} preset, not detection")
    kwargs = {**preset.extra.get("detector", {}), **kwargs}
    min_size, max_size = preset.crop_size
    kwargs.setdefault("min_size", min_size)
    kwargs.setdefault("max_size", max_size)
    return build_mask_rcnn(backbone, adapter, preset.num_classes, normalization, **kwargs)


def detection_loss(model: nn.Module, batch: tuple[list, list]) -> torch.Tensor:
    images, targets = batch
    return sum(model(images, targets).values())


def evaluate_detection(
    model: nn.Module, dataset, device: torch.device, max_images: int | None
) -> dict[str, Any]:
    """COCO box and mask AP over the first ``max_images`` images of a ``coco_dataset``."""
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    outputs, ids = [], []
    for index in range(count):
        image, target = dataset[index]
        out = model([image.as_subclass(torch.Tensor).to(device)])[0]
        outputs.append({k: v.cpu() for k, v in out.items()})
        ids.append(int(target["image_id"]))
    coco_gt = dataset.coco if hasattr(dataset, "coco") else dataset._dataset.coco
    subset = _subset_coco(coco_gt, ids) if count < len(dataset) else coco_gt
    result: dict[str, Any] = coco_ap(subset, coco_results(outputs, ids))
    result["images"] = count
    return result


def _subset_coco(coco_gt, image_ids: list[int]):
    """A COCO object restricted to ``image_ids`` (evaluating on the first N images only)."""
    from pycocotools.coco import COCO

    keep = set(image_ids)
    data = dict(coco_gt.dataset)
    data["images"] = [img for img in data["images"] if img["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    subset = COCO()
    subset.dataset = data
    subset.createIndex()
    return subset


def predict_detections(
    model: nn.Module, preset: DensePreset, rgb, folder: Path, stem: str, device, options: PredictOptions
) -> None:
    """``<stem>.png`` with boxes and masks drawn, ``<stem>.json`` with those at or above the threshold."""
    from torchvision.transforms.v2 import functional as TF

    image = TF.to_dtype(TF.to_image(rgb), torch.float32, scale=True)  # [3, H, W] in [0, 1]
    result = model([image.to(device)])[0]
    save_detections(image, result, folder / f"{stem}.png", options.score_threshold)
    keep = result["scores"] >= options.score_threshold
    write_json(
        folder / f"{stem}.json",
        {
            "boxes_xyxy": result["boxes"][keep].tolist(),
            "labels": result["labels"][keep].tolist(),
            "scores": result["scores"][keep].tolist(),
        },
    )


def detector_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, dict[str, list[nn.Module]]]:
    """Adapter, neck (the "head") and the RPN + RoI heads (``detector``) of the Mask R-CNN."""
    return model.backbone.adapter, model.backbone.neck, {"detector": [model.rpn, model.roi_heads]}


DETECTION = DenseTaskSpec(
    name="detection",
    dataset=detection_dataset,
    collate=collate_detection,
    split_files=detection_split,
    needs_classes=True,
    own_model=OwnModel(
        build=build_preset_detector,
        loss=detection_loss,
        evaluate=evaluate_detection,
        predict=predict_detections,
        parts=detector_parts,
        frozen_prefix="backbone.backbone.",  # MaskRCNN.backbone (ViTSplitDetectionBackbone).backbone
    ),
)

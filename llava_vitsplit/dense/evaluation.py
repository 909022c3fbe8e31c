"""Evaluation loops: mIoU for segmentation, depth errors, COCO AP for detection."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llava_vitsplit.dense.inference import predict_resized
from llava_vitsplit.dense.metrics import DepthMetric, SegmentationMetric, coco_ap, coco_results
from llava_vitsplit.dense.model import DenseModel
from llava_vitsplit.dense.presets import DensePreset


def _branch_predictor(model: DenseModel, name: str):
    def predict(pixels: torch.Tensor) -> torch.Tensor:
        return model(pixels)[name]  # [B, K, h, w]

    return predict


@torch.no_grad()
def evaluate_dense(
    model: DenseModel, preset: DensePreset, dataset, device: torch.device, max_images: int | None = None
) -> dict[str, Any]:
    """Run one branch (named ``preset.name``) over ``dataset`` (eval transforms, labels at full size)."""
    was_training = model.training
    model.eval()
    predict = _branch_predictor(model, preset.name)
    crop = preset.crop_size if preset.slide_stride else None
    if preset.task == "segmentation":
        metric: SegmentationMetric | DepthMetric = SegmentationMetric(preset.num_classes, preset.ignore_index)
    else:
        metric = DepthMetric(preset.min_depth, preset.max_depth)
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    for index in range(count):
        item = dataset[index]
        pixels = item["pixel_values"][None].to(device)  # [1, 3, h, w]
        target = item["labels"] if preset.task == "segmentation" else item["depth"]  # [H, W]
        pred = predict_resized(
            predict, pixels, tuple(target.shape[-2:]), crop, preset.slide_stride
        )  # [1, K, H, W]
        if preset.task == "segmentation":
            metric.update(pred.argmax(1)[0].cpu(), target)
        else:
            depth_pred, depth_gt = pred[0, 0].cpu(), target
            if preset.eval_crop is not None:
                top, bottom, left, right = preset.eval_crop
                if depth_gt.shape[-2] >= bottom and depth_gt.shape[-1] >= right:
                    depth_pred = depth_pred[top:bottom, left:right]
                    depth_gt = depth_gt[top:bottom, left:right]
            metric.update(depth_pred, depth_gt)
    model.train(was_training)
    result = metric.compute()
    result["images"] = count
    return result


@torch.no_grad()
def evaluate_detection(
    model: nn.Module, dataset, device: torch.device, max_images: int | None = None
) -> dict[str, Any]:
    """COCO box and mask AP of a Mask R-CNN over a ``coco_dataset``."""
    was_training = model.training
    model.eval()
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    outputs, ids = [], []
    for index in range(count):
        image, target = dataset[index]
        out = model([image.as_subclass(torch.Tensor).to(device)])[0]
        outputs.append({k: v.cpu() for k, v in out.items()})
        ids.append(int(target["image_id"]))
    model.train(was_training)
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

"""Dense metrics: mIoU (confusion matrix, ignore index), depth errors, COCO AP via pycocotools."""

from __future__ import annotations

import math
from typing import Any

import torch


class SegmentationMetric:
    """Accumulates a ``[K, K]`` confusion matrix (rows = ground truth) over predictions ``[..., H, W]``."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        if pred.shape != label.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
        valid = label != self.ignore_index
        k = self.num_classes
        idx = label[valid].long().cpu() * k + pred[valid].long().cpu()
        self.confusion += torch.bincount(idx, minlength=k * k).reshape(k, k)

    def compute(self) -> dict[str, Any]:
        """``mIoU`` (mean over classes present in labels or predictions), ``aAcc``, ``mAcc``, per-class ``IoU``."""
        conf = self.confusion.double()
        tp = conf.diag()
        gt = conf.sum(1)
        union = gt + conf.sum(0) - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
        acc = torch.where(gt > 0, tp / gt.clamp_min(1), torch.full_like(tp, math.nan))
        total = conf.sum()
        return {
            "mIoU": float(iou.nanmean()) if bool((union > 0).any()) else 0.0,
            "mAcc": float(acc.nanmean()) if bool((gt > 0).any()) else 0.0,
            "aAcc": float(tp.sum() / total) if total > 0 else 0.0,
            "IoU": [None if math.isnan(v) else float(v) for v in iou.tolist()],
        }


DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "delta1", "delta2", "delta3")


class DepthMetric:
    """Per-image depth errors over valid pixels (``min_depth < gt <= max_depth``), averaged over images."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0) -> None:
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.sums = dict.fromkeys(DEPTH_KEYS, 0.0)
        self.count = 0

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """One image: ``pred``/``gt`` ``[H, W]`` in metres."""
        pred, gt = pred.float().reshape(gt.shape).cpu(), gt.float().cpu()
        valid = (gt > self.min_depth) & (gt <= self.max_depth)
        if not bool(valid.any()):
            return
        p = pred[valid].clamp(self.min_depth, self.max_depth)
        g = gt[valid]
        ratio = torch.maximum(p / g, g / p)
        log_diff = torch.log(p) - torch.log(g)
        values = {
            "abs_rel": ((p - g).abs() / g).mean(),
            "sq_rel": ((p - g) ** 2 / g).mean(),
            "rmse": ((p - g) ** 2).mean().sqrt(),
            "rmse_log": (log_diff**2).mean().sqrt(),
            "log10": (torch.log10(p) - torch.log10(g)).abs().mean(),
            "silog": ((log_diff**2).mean() - log_diff.mean() ** 2).clamp_min(0).sqrt() * 100,
            "delta1": (ratio < 1.25).double().mean(),
            "delta2": (ratio < 1.25**2).double().mean(),
            "delta3": (ratio < 1.25**3).double().mean(),
        }
        for key, value in values.items():
            self.sums[key] += float(value)
        self.count += 1

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no image with valid depth was evaluated")
        return {k: v / self.count for k, v in self.sums.items()}


def coco_results(
    outputs: list[dict[str, torch.Tensor]], image_ids: list[int], mask_threshold: float = 0.5
) -> list[dict]:
    """Mask R-CNN outputs -> COCO result dicts (``bbox`` XYWH, ``segmentation`` RLE, ``score``)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    results = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        masks = out.get("masks")
        for i, (box, score, label) in enumerate(
            zip(xywh, out["scores"].tolist(), out["labels"].tolist(), strict=True)
        ):
            item = {"image_id": int(image_id), "category_id": int(label), "bbox": box, "score": float(score)}
            if masks is not None:
                binary = (masks[i, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
                rle = mask_utils.encode(np.asfortranarray(binary))
                rle["counts"] = rle["counts"].decode("ascii")
                item["segmentation"] = rle
            results.append(item)
    return results


def coco_ap(coco_gt, results: list[dict], iou_types: tuple[str, ...] = ("bbox", "segm")) -> dict[str, float]:
    """COCO AP / AP50 / AP75 / APs / APm / APl per IoU type through ``pycocotools.cocoeval.COCOeval``."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    metrics: dict[str, float] = {}
    if not results:
        return {f"{t}_{n}": 0.0 for t in iou_types for n in names}
    for iou_type in iou_types:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        for name, value in zip(names, evaluator.stats[:6], strict=True):
            metrics[f"{iou_type}_{name}"] = float(value)
    return metrics

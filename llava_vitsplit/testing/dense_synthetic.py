"""Small generated datasets and a tiny preset, for tests and smoke runs on CPU (nothing downloaded).

- ``make_segmentation_set``: coloured squares (class 1) and discs (class 2) on a noisy background
  (class 0), in the ``folder`` layout (``images/{split}``, ``labels/{split}``).
- ``make_depth_set``: a tilted floor whose brightness follows depth, plus a near box, in the ``folder``
  layout (``images/{split}``, ``depths/{split}`` as 16-bit millimetre PNGs).
- ``make_coco_set``: rectangles of two categories with boxes and polygon masks in COCO format
  (``{split}/`` images + ``annotations/instances_{split}.json``).
- ``tiny_preset``: a preset on a 4-block, 32-wide random DINOv2 with patch 8.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from llava_vitsplit.dense.presets import DensePreset

TINY_BACKBONE = {
    "model_type": "dinov2",
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "mlp_ratio": 2,
    "image_size": 64,
    "patch_size": 8,
}

# Small RPN / RoI budgets and a narrow FPN so Mask R-CNN trains in seconds on CPU.
_TINY_DETECTOR = {
    "fpn_channels": 32,
    "mask_head_channels": 32,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 64,
    "box_detections_per_img": 20,
}


# What differs from the folder-layout, 64x64 defaults per task (a new task needs no entry).
_TINY_TASK_SETTINGS: dict[str, dict] = {
    "depth": {"num_classes": 0},
    "detection": {
        "dataset": "coco",
        "crop_size": (64, 96),
        "test_size": None,
        "extra": {"detector": _TINY_DETECTOR},
    },
}


def tiny_preset(task: str = "segmentation", num_classes: int = 3, **changes) -> DensePreset:
    """A preset that trains in seconds on CPU: K_t = 1, prior layers [1, 2], 64x64 crops."""
    settings = {
        "dataset": "folder",
        "num_classes": num_classes,
        "crop_size": (64, 64),
        "test_size": (64, 64),
        "extra": {},
        **_TINY_TASK_SETTINGS.get(task, {}),
    }
    base = DensePreset(
        name=f"tiny-{task}",
        task=task,
        backbone=dict(TINY_BACKBONE),
        adapter={"num_task_layers": 1, "prior_selection": "explicit", "prior_layers": [1, 2]},
        scale_range=(1.0, 1.0),
        lr=1e-3,
        task_head_lr_mult=0.1,
        weight_decay=0.01,
        warmup_iters=0,
        max_iters=60,
        batch_size=8,
        max_depth=10.0,
        **settings,
    )
    return base.replace(**changes) if changes else base


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(90, 160)
    return np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255)


def make_segmentation_set(
    root: str | Path, n_train: int = 48, n_val: int = 12, size: int = 64, seed: int = 0
) -> Path:
    """Write the shapes set; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, count in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = _background(rng, size)
            label = np.zeros((size, size), dtype=np.uint8)
            for cls in rng.permutation([1, 2]):
                r = int(rng.integers(size // 8, size // 4))
                cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
                if cls == 1:
                    region = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
                    colour = (200 + rng.normal(0, 15), 50 + rng.normal(0, 15), 40)
                else:
                    region = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                    colour = (40, 70 + rng.normal(0, 15), 210 + rng.normal(0, 15))
                image[region] = np.clip(np.array(colour) + rng.normal(0, 8, (int(region.sum()), 3)), 0, 255)
                label[region] = cls
            Image.fromarray(image.astype(np.uint8)).save(root / "images" / split / f"{i:04d}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{i:04d}.png")
    return root


def make_depth_set(
    root: str | Path, n_train: int = 32, n_val: int = 8, size: int = 64, seed: int = 0
) -> Path:
    """Write the depth set (depth 1-8 m, millimetre PNGs); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for split, count in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "depths" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            far, near = rng.uniform(6, 8), rng.uniform(1, 2)
            depth = far - (far - near) * yy / (size - 1) + rng.normal(0, 0.02, (size, size))
            r = int(rng.integers(6, 14))
            cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
            box = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            depth[box] = rng.uniform(1.0, 2.5)
            shade = 255 * (1 - (depth - 1) / 8)
            image = np.stack([shade, shade * 0.9, shade * 0.8], -1) + rng.normal(0, 5, (size, size, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                root / "images" / split / f"{i:04d}.png"
            )
            Image.fromarray((depth * 1000).astype(np.uint16)).save(root / "depths" / split / f"{i:04d}.png")
    return root


def make_coco_set(
    root: str | Path, n_train: int = 8, n_val: int = 4, size: tuple[int, int] = (64, 96), seed: int = 0
) -> Path:
    """Write a COCO-format set (categories 1 = "red box", 2 = "blue box"); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    height, width = size
    ann_id = 1
    for split, count in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image = _background(rng, max(size))[:height, :width]
            image_id = i + 1
            for cat in (1, 2):
                h, w = (int(v) for v in rng.integers(12, 28, 2))
                y0, x0 = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
                image[y0 : y0 + h, x0 : x0 + w] = (220, 40, 40) if cat == 1 else (40, 40, 220)
                poly = [x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": cat,
                        "bbox": [x0, y0, w, h],
                        "area": float(w * h),
                        "iscrowd": 0,
                        "segmentation": [[float(v) for v in poly]],
                    }
                )
                ann_id += 1
            name = f"{image_id:06d}.png"
            Image.fromarray(image.astype(np.uint8)).save(root / split / name)
            images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        data = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "red box"}, {"id": 2, "name": "blue box"}],
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root

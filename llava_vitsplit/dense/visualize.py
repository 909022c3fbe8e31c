"""Writing predictions as images: palette PNG masks, 16-bit depth PNGs, colour depth maps, box overlays.

Every PNG is written atomically (temporary file + rename), so an interrupted run leaves no truncated image.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llava_vitsplit.util.atomic import write_atomic


def _save_png(img: Image.Image, path: str | Path) -> Path:
    return write_atomic(path, lambda tmp: img.save(tmp, format="PNG"))


def class_palette(num_classes: int) -> np.ndarray:
    """``[K, 3]`` uint8 colours: class 0 dark grey, the rest spread around the hue circle (golden ratio)."""
    colours = [(40, 40, 40)]
    for k in range(1, num_classes):
        hue = (k * 0.618033988749895) % 1.0
        sat = 0.55 + 0.4 * ((k * 7) % 3) / 2
        val = 0.95 - 0.3 * ((k * 5) % 2)
        colours.append(tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, val)))
    return np.array(colours[:num_classes], dtype=np.uint8)


def save_mask(pred: torch.Tensor | np.ndarray, path: str | Path, num_classes: int) -> Path:
    """Save class ids ``[H, W]`` as a palette PNG: pixel values are class ids, colours from ``class_palette``."""
    ids = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred).astype(np.int64)
    if num_classes > 256:
        raise ValueError(f"a palette PNG holds at most 256 classes, got {num_classes}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes}), got {ids.min()}..{ids.max()}")
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:num_classes] = class_palette(num_classes)
    img.putpalette(palette.flatten().tolist())
    return _save_png(img, path)


def save_depth(depth: torch.Tensor | np.ndarray, path: str | Path, depth_scale: float = 1000.0) -> Path:
    """Save metres ``[H, W]`` as a 16-bit PNG of ``depth * depth_scale`` (millimetres by default)."""
    values = np.asarray(depth.cpu() if isinstance(depth, torch.Tensor) else depth, dtype=np.float64)
    scaled = np.clip(np.round(values * depth_scale), 0, 65535).astype(np.uint16)
    return _save_png(Image.fromarray(scaled), path)


def save_depth_colour(
    depth: torch.Tensor | np.ndarray, path: str | Path, max_depth: float | None = None
) -> Path:
    """Save a colour-mapped depth image (matplotlib ``magma_r``: near = bright)."""
    from matplotlib import colormaps

    values = np.asarray(depth.cpu() if isinstance(depth, torch.Tensor) else depth, dtype=np.float64)
    lo, hi = float(values.min()), float(max_depth or values.max())
    norm = np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = (colormaps["magma_r"](norm)[..., :3] * 255).astype(np.uint8)
    return _save_png(Image.fromarray(rgb), path)


def save_detections(
    image: torch.Tensor, output: dict[str, torch.Tensor], path: str | Path, score_threshold: float = 0.5
) -> Path:
    """Draw boxes and masks (score >= threshold) on a ``[3, H, W]`` float image in [0, 1] and save a PNG."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    keep = output["scores"] >= score_threshold
    canvas = (image.clamp(0, 1) * 255).to(torch.uint8).cpu()
    if "masks" in output and bool(keep.any()):
        canvas = draw_segmentation_masks(canvas, output["masks"][keep, 0].cpu() > 0.5, alpha=0.4)
    labels = [
        f"{int(c)}:{float(s):.2f}"
        for c, s in zip(output["labels"][keep], output["scores"][keep], strict=True)
    ]
    if bool(keep.any()):
        canvas = draw_bounding_boxes(canvas, output["boxes"][keep].cpu(), labels=labels, width=2)
    return _save_png(Image.fromarray(canvas.permute(1, 2, 0).numpy()), path)

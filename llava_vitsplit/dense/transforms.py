"""Training augmentation and evaluation resizing, built from ``torchvision.transforms.v2``.

Images arrive as ``tv_tensors.Image`` uint8 ``[3, H, W]`` and targets as ``tv_tensors.Mask``
(class ids, or depth in metres); v2 resizes masks with nearest-neighbour and pads them with the fill
given per type (the ignore index for labels, 0 = invalid for depth). Outputs are ImageNet-normalised
float images (DINOv2 and open_clip-style towers expect this normalisation; CLIP towers use their own
mean/std, passed in).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean, std),
    ]


def train_transform(
    crop_size: tuple[int, int],
    base_size: tuple[int, int] | None,
    scale_range: tuple[float, float],
    fill: float,
    photometric: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Random scale (into ``base_size`` x U(scale_range), aspect kept), crop with padding, flip, colour jitter."""
    steps: list[v2.Transform] = []
    if base_size is not None and scale_range != (1.0, 1.0):
        steps.append(v2.ScaleJitter(target_size=base_size, scale_range=scale_range, antialias=True))
    elif base_size is not None:
        steps.append(ResizeInto(base_size))
    steps += [
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: fill}),
        v2.RandomHorizontalFlip(),
    ]
    if photometric:
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    return v2.Compose(steps + _normalise(mean, std))


class ResizeInto(v2.Transform):
    """Resize so the image fits inside ``(max_h, max_w)`` with its aspect ratio kept (mmseg ``keep_ratio``)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        scale = min(self.size[0] / height, self.size[1] / width)
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt, params: dict):
        return self._call_kernel(v2.functional.resize, inpt, size=params["size"], antialias=True)


def eval_image_transform(
    test_size: tuple[int, int] | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Resize an image into ``test_size`` (aspect kept) and normalise; targets are left untouched."""
    steps: list[v2.Transform] = [ResizeInto(test_size)] if test_size is not None else []
    return v2.Compose(steps + _normalise(mean, std))


class ImageOnly:
    """Apply ``image_transform`` to the image and pass the target through at full resolution (evaluation)."""

    def __init__(self, image_transform: v2.Transform) -> None:
        self.image_transform = image_transform

    def __call__(self, image: tv_tensors.Image, target: tv_tensors.Mask) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_transform(image), target

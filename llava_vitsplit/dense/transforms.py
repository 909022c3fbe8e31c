"""Training augmentation and evaluation resizing, built from ``torchvision.transforms.v2``.

Images arrive as ``tv_tensors.Image`` uint8 ``[3, H, W]`` and targets as ``tv_tensors.Mask``
(class ids, or depth in metres); v2 resizes masks with nearest-neighbour and pads them with the fill
given per type (the ignore index for labels, 0 = invalid for depth). Outputs are float images
normalised with the backbone's ``Normalization`` (``backbones.normalization``: DINOv2 ImageNet's, CLIP
OpenAI's, SigLIP 0.5 / 0.5, or the checkpoint's own), which every caller passes.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from llava_vitsplit.backbones.registry import Normalization


def normalise(normalization: Normalization) -> list[v2.Transform]:
    """uint8 ``[3, H, W]`` -> float in [0, 1] -> ``(x - mean) / std`` per channel (targets untouched)."""
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(list(normalization.mean), list(normalization.std)),
    ]


def train_transform(
    crop_size: tuple[int, int],
    base_size: tuple[int, int] | None,
    scale_range: tuple[float, float],
    fill: float,
    normalization: Normalization,
    photometric: bool = True,
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
    return v2.Compose(steps + normalise(normalization))


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


def eval_image_transform(test_size: tuple[int, int] | None, normalization: Normalization) -> v2.Compose:
    """Resize an image into ``test_size`` (aspect kept) and normalise; targets are left untouched."""
    steps: list[v2.Transform] = [ResizeInto(test_size)] if test_size is not None else []
    return v2.Compose(steps + normalise(normalization))


class ImageOnly:
    """Apply ``image_transform`` to the image and pass the target through at full resolution (evaluation)."""

    def __init__(self, image_transform: v2.Transform) -> None:
        self.image_transform = image_transform

    def __call__(self, image: tv_tensors.Image, target: tv_tensors.Mask) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_transform(image), target

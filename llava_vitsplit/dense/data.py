"""Dense datasets in their standard on-disk layouts, with checks that name the offending file.

Segmentation layouts (``split`` is ``train`` or ``val``):

- ``ade20k``: ``images/{training,validation}/*.jpg`` + ``annotations/{...}/<stem>.png`` (0 = "other",
  reduced to the ignore index with ``reduce_zero_label``).
- ``cityscapes``: ``leftImg8bit/{split}/<city>/<x>_leftImg8bit.png`` +
  ``gtFine/{split}/<city>/<x>_gtFine_labelTrainIds.png`` (train ids, 255 ignored).
- ``pascal_context``: ``JPEGImages/<id>.jpg`` + ``SegmentationClassContext/<id>.png``, ids listed in
  ``ImageSets/SegmentationContext/{split}.txt``.
- ``folder``: ``images/{split}/*`` + ``labels/{split}/<stem>.png`` (label values are class ids).

Depth layouts: ``nyu``: ``{split}.txt`` (or ``nyu_{split}.txt``) whose lines are
``<rgb path> <depth path> [...]`` relative to the root (BTS / Monocular-Depth-Estimation-Toolbox lists),
depth as 16-bit PNG in millimetres (``depth_scale`` 1000); ``folder``: ``images/{split}/*`` +
``depths/{split}/<stem>.png``.

Detection: COCO ``instances_*.json`` through ``torchvision.datasets.CocoDetection`` wrapped for
transforms v2 (boxes XYXY, masks, labels = COCO category ids).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from llava_vitsplit.util.pil import truncation_is_an_error

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# 16-bit single-channel PIL modes a depth PNG may open as.
DEPTH_MODES = ("I", "I;16", "I;16B")
_ADE_SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


class BadSample(ValueError):
    """A file that cannot be trained on; ``kind`` groups problems (``unreadable``, ``class-id``, ...)."""

    def __init__(self, kind: str, path: Path | str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = str(path)


# (image, label) pairs where one file is absent: collected instead of raised when a list is given.
Missing = list[tuple[Path, Path]]


def _pair(
    image: Path, other: Path, missing: Missing | None, what: str, where: str
) -> tuple[Path, Path] | None:
    """``(image, other)`` if both exist; else raise "missing <what> <file> <where>" or record it in ``missing``."""
    absent = next((p for p in (image, other) if not p.is_file()), None)
    if absent is None:
        return image, other
    if missing is None:
        raise FileNotFoundError(f"missing {what} {absent} {where}")
    missing.append((image, absent))
    return None


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {path} does not exist")
    return path


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _pair_by_stem(
    image_dir: Path, label_dir: Path, missing: Missing | None, suffix: str = ".png"
) -> list[tuple[Path, Path]]:
    _require_dir(image_dir, "image")
    _require_dir(label_dir, "label")
    pairs = [
        _pair(image, label_dir / f"{image.stem}{suffix}", missing, "label file", f"for image {image}")
        for image in _images_in(image_dir)
    ]
    return [p for p in pairs if p is not None]


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def segmentation_pairs(
    root: str | Path, layout: str, split: str, missing: Missing | None = None
) -> list[tuple[Path, Path]]:
    """``(image, label)`` paths of a segmentation split in one of the standard layouts.

    A listed image without its label (or the reverse) raises, or with ``missing`` given is recorded there.
    """
    root = _require_dir(Path(root), "dataset root")
    if layout == "ade20k":
        sub = _ADE_SPLITS.get(split, split)
        found = _pair_by_stem(root / "images" / sub, root / "annotations" / sub, missing)
    elif layout == "cityscapes":
        image_root = _require_dir(root / "leftImg8bit" / split, "image")
        found = []
        for image in sorted(image_root.glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len("_leftImg8bit.png")]
            label = root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"
            found.append(_pair(image, label, missing, "label file", f"for image {image}"))
    elif layout == "pascal_context":
        found = [
            _pair(
                root / "JPEGImages" / f"{stem}.jpg",
                root / "SegmentationClassContext" / f"{stem}.png",
                missing,
                "file",
                f"listed in the {split} split",
            )
            for stem in _read_list(root / "ImageSets" / "SegmentationContext" / f"{split}.txt")
        ]
    elif layout == "folder":
        found = _pair_by_stem(root / "images" / split, root / "labels" / split, missing)
    else:
        raise ValueError(
            f"unknown segmentation layout {layout!r}; valid: ade20k, cityscapes, pascal_context, folder"
        )
    pairs = [p for p in found if p is not None]
    if not pairs and not missing:
        raise FileNotFoundError(f"no images found for split {split!r} of the {layout} layout under {root}")
    return pairs


def depth_pairs(
    root: str | Path, layout: str, split: str, missing: Missing | None = None
) -> list[tuple[Path, Path]]:
    """``(image, depth PNG)`` paths of a depth split (``missing`` as for ``segmentation_pairs``)."""
    root = _require_dir(Path(root), "dataset root")
    if layout == "nyu":
        listing = next((root / n for n in (f"{split}.txt", f"nyu_{split}.txt") if (root / n).is_file()), None)
        if listing is None:
            raise FileNotFoundError(
                f"no split list {root / f'{split}.txt'} (or nyu_{split}.txt) for the nyu layout"
            )
        pairs = []
        for number, line in enumerate(_read_list(listing), start=1):
            parts = line.split()
            if len(parts) < 2:
                raise ValueError(f"{listing}:{number}: expected '<rgb path> <depth path>', got {line!r}")
            image, depth = (root / parts[0].lstrip("/"), root / parts[1].lstrip("/"))
            pair = _pair(image, depth, missing, "file", f"listed in {listing}:{number}")
            if pair is not None:
                pairs.append(pair)
    elif layout == "folder":
        pairs = _pair_by_stem(root / "images" / split, root / "depths" / split, missing)
    else:
        raise ValueError(f"unknown depth layout {layout!r}; valid: nyu, folder")
    if not pairs and not missing:
        raise FileNotFoundError(f"no images found for split {split!r} of the {layout} layout under {root}")
    return pairs


# What PIL raises on a corrupt, truncated or hostile file.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_rgb(path: Path) -> Image.Image:
    """The image fully decoded as RGB; a file PIL cannot decode raises ``BadSample("unreadable")``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with truncation_is_an_error(), Image.open(path) as img:
            return img.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise BadSample("unreadable", path, f"cannot read image {path}: {exc}") from exc


def _open_array(path: Path, modes: tuple[str, ...], expected: str, kind: str) -> np.ndarray:
    """A single-channel PNG decoded to ``[H, W]`` int64; other modes raise ``BadSample(kind)``."""
    try:
        with truncation_is_an_error(), Image.open(path) as img:
            if img.mode not in modes:
                raise BadSample(kind, path, f"{path} has mode {img.mode}; expected {expected}")
            return np.array(img, dtype=np.int64)
    except _DECODE_ERRORS as exc:
        if isinstance(exc, BadSample):
            raise
        raise BadSample("unreadable", path, f"cannot read {path}: {exc}") from exc


def check_same_size(
    image: Image.Image, image_path: Path, other: np.ndarray, other_path: Path, what: str
) -> None:
    if (image.height, image.width) != other.shape:
        raise BadSample(
            "size-mismatch",
            other_path,
            f"{what} {other_path} is {other.shape[1]}x{other.shape[0]} but its image {image_path} is "
            f"{image.width}x{image.height} (width x height)",
        )


def decode_label(path: Path, ignore_index: int = 255, reduce_zero_label: bool = False) -> np.ndarray:
    """Class-id map ``[H, W]`` (int64) of a label PNG, with 0 mapped to ``ignore_index`` if asked."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"label file {path} does not exist")
    label = _open_array(
        path, ("L", "P", "I", "I;16"), "a single-channel (L/P) PNG of class ids", "wrong-mode"
    )
    if reduce_zero_label:
        label = np.where(label == 0, ignore_index, label - 1)
        label[label == ignore_index - 1] = ignore_index
    return label


def unknown_class_ids(
    label: np.ndarray, path: Path, num_classes: int, ignore_index: int = 255, reduce_zero_label: bool = False
) -> BadSample | None:
    """The problem with ids outside ``[0, K)`` other than ``ignore_index``, or ``None``."""
    bad = np.unique(label[(label != ignore_index) & ((label < 0) | (label >= num_classes))])
    if not bad.size:
        return None
    return BadSample(
        "class-id",
        path,
        f"label {path} has unknown class id(s) {bad.tolist()[:10]}: valid are 0..{num_classes - 1} "
        f"and {ignore_index} (ignore){' after reduce_zero_label' if reduce_zero_label else ''}",
    )


def load_label(
    path: Path, num_classes: int, ignore_index: int = 255, reduce_zero_label: bool = False
) -> np.ndarray:
    """Class-id map ``[H, W]`` (int64) from a label PNG; ids outside ``[0, K)`` and ``ignore_index`` raise."""
    label = decode_label(path, ignore_index, reduce_zero_label)
    problem = unknown_class_ids(label, path, num_classes, ignore_index, reduce_zero_label)
    if problem is not None:
        raise problem
    return label


def load_depth(path: Path, depth_scale: float) -> np.ndarray:
    """Depth in metres ``[H, W]`` (float32) from a 16-bit PNG (``value / depth_scale``; 0 = invalid).

    An 8-bit PNG raises ``BadSample("bit-depth")``: its values cannot be millimetres.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"depth file {path} does not exist")
    raw = _open_array(path, DEPTH_MODES, "a single-channel 16-bit PNG (depth map)", "bit-depth")
    return raw.astype(np.float32) / depth_scale


class SegmentationDataset(Dataset):
    """Items ``{"pixel_values": [3, H, W], "labels": [H, W] int64, "path": str}`` after ``transform``.

    ``transform(image: tv_tensors.Image, label: tv_tensors.Mask) -> (image, label)``; in evaluation
    use ``label_transform=False`` transforms that leave the label at its original size.
    """

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        num_classes: int,
        transform: Callable[[Any, Any], tuple[torch.Tensor, torch.Tensor]] | None = None,
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
    ) -> None:
        self.pairs = pairs
        self.num_classes = num_classes
        self.transform = transform
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.pairs[index]
        image = load_rgb(image_path)
        label = load_label(label_path, self.num_classes, self.ignore_index, self.reduce_zero_label)
        check_same_size(image, image_path, label, label_path, "label")
        pixels = tv_tensors.Image(
            torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        )  # [3, H, W] uint8
        mask = tv_tensors.Mask(torch.from_numpy(label))  # [H, W]
        if self.transform is not None:
            pixels, mask = self.transform(pixels, mask)
        return {
            "pixel_values": pixels.as_subclass(torch.Tensor),
            "labels": mask.as_subclass(torch.Tensor).long(),
            "path": str(image_path),
        }


class DepthDataset(Dataset):
    """Items ``{"pixel_values": [3, H, W], "depth": [H, W] float32 metres, "path": str}``."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        depth_scale: float = 1000.0,
        transform: Callable[[Any, Any], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        self.pairs = pairs
        self.depth_scale = depth_scale
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, depth_path = self.pairs[index]
        image = load_rgb(image_path)
        depth = load_depth(depth_path, self.depth_scale)
        check_same_size(image, image_path, depth, depth_path, "depth map")
        pixels = tv_tensors.Image(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))  # [3, H, W]
        target = tv_tensors.Mask(torch.from_numpy(depth))  # [H, W] metres
        if self.transform is not None:
            pixels, target = self.transform(pixels, target)
        return {
            "pixel_values": pixels.as_subclass(torch.Tensor),
            "depth": target.as_subclass(torch.Tensor).float(),
            "path": str(image_path),
        }


def coco_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(image folder, instances file)`` of a COCO split: ``<root>/<split>/``, ``annotations/instances_<split>.json``."""
    root = Path(root)
    return root / split, root / "annotations" / f"instances_{split}.json"


def coco_dataset(
    image_dir: str | Path, annotation_file: str | Path, transforms=None, skip: frozenset[str] = frozenset()
):
    """COCO instances as ``(image, target)`` with ``boxes`` (XYXY), ``masks``, ``labels`` (category ids), ``image_id``.

    Images whose path is in ``skip`` (found bad by ``dense.validate``) are left out.
    """
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

    image_dir, annotation_file = Path(image_dir), Path(annotation_file)
    _require_dir(image_dir, "COCO image")
    if not annotation_file.is_file():
        raise FileNotFoundError(f"COCO annotation file {annotation_file} does not exist")
    dataset = CocoDetection(str(image_dir), str(annotation_file), transforms=transforms)
    dataset.ids = [i for i in dataset.ids if str(image_dir / dataset.coco.imgs[i]["file_name"]) not in skip]
    missing = [
        dataset.coco.imgs[i]["file_name"]
        for i in dataset.ids
        if not (image_dir / dataset.coco.imgs[i]["file_name"]).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {annotation_file} are missing from {image_dir}, e.g. {missing[:3]}"
        )
    return wrap_dataset_for_transforms_v2(dataset, target_keys=("image_id", "boxes", "labels", "masks"))


def list_images(paths: list[str | Path]) -> list[Path]:
    """Image files from files and folders (folders: their images, sorted); missing paths raise."""
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found += _images_in(path)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"image path {path} does not exist")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {[str(p) for p in paths]}")
    return found

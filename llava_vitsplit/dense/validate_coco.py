"""The COCO part of ``dense.validate``: images listed in ``instances_<split>.json`` and their annotations.

Each listed image is opened once (``missing-image``, ``unreadable``, ``size-mismatch`` against the
declared height/width); each annotation is checked for a category outside ``1..K-1`` (``class-id``)
and for a mask that covers no pixel (``empty-mask``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_vitsplit.dense.data import BadSample, coco_paths, load_rgb


@dataclass
class CocoFiles:
    image_dir: Path
    annotation_file: Path
    images: list[dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]]  # by image id

    def image_paths(self) -> list[Path]:
        return [self.image_dir / img["file_name"] for img in self.images]


def coco_files(root: str | Path, split: str) -> CocoFiles:
    """The split's image list and annotations (a missing or invalid annotation file raises)."""
    image_dir, annotation_file = coco_paths(root, split)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"COCO annotation file {annotation_file} does not exist")
    try:
        data = json.loads(annotation_file.read_text())
        images = list(data["images"])
        by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ann in data.get("annotations", []):
            by_image[ann["image_id"]].append(ann)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{annotation_file} is not a COCO instances file: {exc!r}") from exc
    return CocoFiles(image_dir, annotation_file, images, dict(by_image))


def mask_area(segmentation: Any, height: int, width: int) -> int:
    """Pixels covered by a COCO ``segmentation`` (polygons or RLE); 0 for an empty one."""
    from pycocotools import mask as mask_utils

    if not segmentation:
        return 0
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return 0
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return int(mask_utils.area(rle))


def _check_annotations(image: dict, path: Path, anns: list[dict], num_classes: int, source: Path):
    sample, found = str(path), []
    for ann in anns:
        where = f"annotation {ann.get('id')} of {path} in {source}"
        category = ann.get("category_id")
        if not isinstance(category, int) or not 1 <= category < num_classes:
            found.append(
                (
                    sample,
                    str(source),
                    "class-id",
                    f"{where}: category {category!r} outside 1..{num_classes - 1}",
                )
            )
        elif mask_area(ann.get("segmentation"), image["height"], image["width"]) == 0:
            found.append((sample, str(source), "empty-mask", f"{where}: its mask covers no pixel"))
    return found


def coco_image_problems(image: dict, files: CocoFiles, num_classes: int) -> list[tuple[str, str, str, str]]:
    """``(sample, file, kind, detail)`` of every problem of one listed image and its annotations."""
    path = files.image_dir / image["file_name"]
    if not path.is_file():
        detail = f"{path} is listed in {files.annotation_file} but does not exist"
        return [(str(path), str(path), "missing-image", detail)]
    found = []
    try:
        rgb = load_rgb(path)
        if (rgb.height, rgb.width) != (image.get("height"), image.get("width")):
            detail = (
                f"{path} is {rgb.width}x{rgb.height} but {files.annotation_file} declares "
                f"{image.get('width')}x{image.get('height')} (width x height)"
            )
            found.append((str(path), str(path), "size-mismatch", detail))
    except BadSample as exc:
        found.append((str(path), str(path), exc.kind, str(exc)))
    anns = files.annotations.get(image["id"], [])
    return found + _check_annotations(image, path, anns, num_classes, files.annotation_file)

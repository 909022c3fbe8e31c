"""Tasks whose samples are (image, target file) pairs: their dataset listing and their ``dense-validate`` check.

Each pair is opened once: the image, then the target with the task's reader (``missing-pair`` for an
absent file, ``unreadable``, ``size-mismatch``), then the task's own checks of the decoded target.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from llava_vitsplit.backbones.registry import Normalization
from llava_vitsplit.dense.data import BadSample, check_same_size, load_rgb
from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks.spec import ProblemTuple, SplitFiles
from llava_vitsplit.dense.transforms import ImageOnly, eval_image_transform, train_transform

Pair = tuple[Path, Path]
# (root, layout, split, missing | None) -> pairs, as ``data.segmentation_pairs`` / ``data.depth_pairs``
PairListing = Callable[..., list[Pair]]


def pair_transform(preset: DensePreset, train: bool, fill: float, normalization: Normalization):
    """Training: the preset's random scale/crop/flip, crops padded with ``fill`` in the target; evaluation:
    the image resized to the test size, the target left at full resolution. Images are normalised with
    the backbone's ``normalization``."""
    if train:
        return train_transform(preset.crop_size, preset.test_size, preset.scale_range, fill, normalization)
    return ImageOnly(eval_image_transform(preset.test_size, normalization))


TargetReader = Callable[[Path], np.ndarray]  # decodes a target file or raises BadSample
TargetCheck = Callable[[Path, Path, np.ndarray], list[ProblemTuple]]  # (image, target file, target)


def bad(image: Path, error: BadSample) -> ProblemTuple:
    return (str(image), error.path, error.kind, str(error))


def kept_pairs(pairs: list[Pair], skip: frozenset[str]) -> list[Pair]:
    """``pairs`` without those whose image is in ``skip``; none left raises."""
    kept = [pair for pair in pairs if str(pair[0]) not in skip]
    if not kept:
        raise ValueError(f"no usable samples left: all {len(pairs)} are bad")
    return kept


def pair_problems(pair: Pair, read: TargetReader, what: str, check: TargetCheck) -> list[ProblemTuple]:
    """Open the image and its target (a ``what``, e.g. "label") once each; every problem they have."""
    image_path, target_path = pair
    problems: list[ProblemTuple] = []
    image = target = None
    try:
        image = load_rgb(image_path)
    except BadSample as exc:
        problems.append(bad(image_path, exc))
    try:
        target = read(target_path)
    except BadSample as exc:
        problems.append(bad(image_path, exc))
    if target is None:
        return problems
    if image is not None:
        try:
            check_same_size(image, image_path, target, target_path, what)
        except BadSample as exc:
            problems.append(bad(image_path, exc))
    return problems + check(image_path, target_path, target)


def pair_split(
    listing: PairListing,
    root: Path,
    layout: str,
    split: str,
    read: TargetReader,
    what: str,
    check: TargetCheck,
) -> SplitFiles:
    """A split's pairs (incomplete ones recorded as missing) with ``pair_problems`` as their check."""
    missing: list[Pair] = []
    pairs = listing(root, layout, split, missing=missing)
    return SplitFiles(
        samples=pairs,
        check=partial(pair_problems, read=read, what=what, check=check),
        paths=[p for pair in pairs for p in pair],
        missing=missing,
    )

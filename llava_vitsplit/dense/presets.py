"""Named dense-task presets (the paper's configurations) as plain data.

``dense_presets()`` returns every preset by name; ``get_dense_preset(name)`` looks one up (unknown names
raise with the valid list); ``dense_param_report(name)`` (in ``param_report.py``) builds the model on the meta device (nothing
allocated, nothing downloaded) and counts trainable and frozen parameters per component.

Prior layers are 0-based block-output indices (``[2, 5, 8, 11]`` reads ``h[3], h[6], h[9], h[12]``).
Values not stated by the paper or the released configs are marked in each preset's ``notes``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEDULES = ("poly", "one_cycle")


@dataclass
class DensePreset:
    """Everything needed to build, train and evaluate one dense model.

    ``backbone`` is an embedded config name (``llava_vitsplit.backbones.configs``) or a config dict
    (``{"model_type": "dinov2", ...}``, or ``{"model_type": "open_clip", "model_name": ...}``).
    ``crop_size`` / ``test_size`` are ``(height, width)``; ``test_size`` is the rectangle images are
    resized into (aspect kept) for evaluation; ``slide_stride`` enables sliding-window inference.
    ``eval_crop`` = ``(top, bottom, left, right)`` limits depth metrics to that region of the
    ground truth (NYU's Eigen crop), applied only when the ground truth is large enough.
    ``task`` names an entry of the task registry (``llava_vitsplit.dense.tasks.TASKS``), which checks it
    (and ``num_classes`` where the task needs classes) when the preset is used.
    """

    name: str
    task: str
    backbone: str | dict[str, Any]
    adapter: dict[str, Any]
    dataset: str
    num_classes: int = 0
    crop_size: tuple[int, int] = (512, 512)
    test_size: tuple[int, int] | None = None
    slide_stride: tuple[int, int] | None = None
    scale_range: tuple[float, float] = (0.5, 2.0)
    lr: float = 1e-4
    task_head_lr_mult: float = 0.1
    weight_decay: float = 0.05
    schedule: str = "poly"
    poly_power: float = 1.0
    warmup_iters: int = 0
    max_iters: int = 40000
    batch_size: int = 16
    ignore_index: int = 255
    reduce_zero_label: bool = False
    min_depth: float = 1e-3
    max_depth: float = 10.0
    depth_scale: float = 1000.0
    eval_crop: tuple[int, int, int, int] | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"preset {self.name!r}: schedule must be one of {SCHEDULES}, got {self.schedule!r}"
            )
        self.crop_size = tuple(int(v) for v in self.crop_size)  # type: ignore[assignment]
        if self.test_size is not None:
            self.test_size = tuple(int(v) for v in self.test_size)  # type: ignore[assignment]
        if self.slide_stride is not None:
            self.slide_stride = tuple(int(v) for v in self.slide_stride)  # type: ignore[assignment]
        self.scale_range = tuple(float(v) for v in self.scale_range)  # type: ignore[assignment]
        if self.eval_crop is not None:
            self.eval_crop = tuple(int(v) for v in self.eval_crop)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DensePreset:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown dense preset field(s) {unknown}; valid: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> DensePreset:
        return DensePreset.from_dict({**self.to_dict(), **changes})


_SIZES = {"s": "small", "b": "base", "l": "large"}
# K_t and prior layers per backbone size (ADE20K-512 configs; NYU-L differs, see below).
_ADE_ADAPTER = {
    "s": {"num_task_layers": 3, "prior_layers": [2, 5, 8, 11]},
    "b": {"num_task_layers": 3, "prior_layers": [2, 5, 8, 11]},
    "l": {"num_task_layers": 4, "prior_layers": [2, 5, 8, 11, 14, 17, 20, 23]},
}
_NYU_ADAPTER = {
    "s": {"num_task_layers": 3, "prior_layers": [2, 5, 8, 11]},
    "b": {"num_task_layers": 3, "prior_layers": [2, 5, 8, 11]},
    "l": {"num_task_layers": 3, "prior_layers": [6, 11, 17, 23]},
}
_ADE_LR = {"s": 3e-4, "b": 2e-4, "l": 2e-4}


def _adapter(layers: dict[str, Any]) -> dict[str, Any]:
    return {
        "prior_selection": "explicit",
        "conv_type": "deformable",
        "task_head_keeps_prefix": True,
        **layers,
    }


# dataset: (classes, crop, test rectangle, slide stride, iters, reduce_zero_label, note)
_SEGMENTATION_SETS = {
    "ade20k": (150, (512, 512), (512, 2048), (341, 341), 40000, True, ""),
    "cityscapes": (
        19,
        (512, 1024),
        (1024, 2048),
        (341, 341),
        40000,
        False,
        "Cityscapes crop/test sizes follow the common mmseg 512x1024 recipe (not in the paper). ",
    ),
    "pascal-context": (
        59,
        (480, 480),
        (480, 520),
        (320, 320),
        40000,
        True,
        "Pascal Context 59-class setting with mmseg's 480 crop (not in the paper). ",
    ),
}


def _segmentation_preset(dataset: str, size: str) -> DensePreset:
    classes, crop, test, stride, iters, rzl, note = _SEGMENTATION_SETS[dataset]
    lr_note = "lr for L is not stated; B's value is used. " if size == "l" else ""
    return DensePreset(
        name=f"dense-{dataset}-{size}",
        task="segmentation",
        backbone=f"dinov2-{_SIZES[size]}",
        adapter=_adapter(_ADE_ADAPTER[size]),
        dataset=dataset.replace("-", "_"),
        num_classes=classes,
        crop_size=crop,
        test_size=test,
        slide_stride=stride,
        lr=_ADE_LR[size],
        task_head_lr_mult=0.1,
        warmup_iters=1500,
        max_iters=iters,
        batch_size=16,
        reduce_zero_label=rzl,
        notes=note + lr_note + ("" if dataset == "ade20k" else "Adapter layers as for ADE20K."),
    )


def _nyu_preset(size: str) -> DensePreset:
    return DensePreset(
        name=f"dense-nyu-{size}",
        task="depth",
        backbone=f"dinov2-{_SIZES[size]}",
        adapter=_adapter(_NYU_ADAPTER[size]),
        dataset="nyu",
        crop_size=(416, 544),
        test_size=(480, 640),
        scale_range=(1.0, 1.0),
        lr=_ADE_LR[size],
        task_head_lr_mult=0.1,
        warmup_iters=1500,
        max_iters=38400,
        batch_size=8,
        min_depth=1e-3,
        max_depth=10.0,
        depth_scale=1000.0,
        eval_crop=(45, 471, 41, 601),
        notes="Metrics inside the Eigen crop of 480x640 ground truth. NYU lr and the 416x544 crop are not stated in the paper (Monocular-Depth-Estimation-Toolbox "
        "defaults; ADE20K lr per size).",
    )


def _coco_preset(size: str) -> DensePreset:
    return DensePreset(
        name=f"dense-coco-{size}",
        task="detection",
        backbone=f"dinov2-{_SIZES[size]}",
        adapter=_adapter(_ADE_ADAPTER[size]),
        dataset="coco",
        num_classes=91,
        crop_size=(800, 1333),
        scale_range=(1.0, 1.0),
        lr=1e-4,
        task_head_lr_mult=1.0,
        warmup_iters=500,
        max_iters=90000,
        batch_size=16,
        notes="COCO Mask R-CNN 1x; adapter layers, lr and schedule are not stated in the paper "
        "(ADE20K adapter layers; ViT-Adapter's AdamW 1e-4). num_classes = 91 (COCO category ids + background).",
    )


def _build_presets() -> dict[str, DensePreset]:
    """Segmentation presets per dataset and size, then NYU depth and COCO detection per size."""
    presets = [_segmentation_preset(dataset, size) for dataset in _SEGMENTATION_SETS for size in _SIZES]
    presets += [preset for size in _SIZES for preset in (_nyu_preset(size), _coco_preset(size))]
    return {preset.name: preset for preset in presets}


_PRESETS = _build_presets()


def dense_presets() -> dict[str, DensePreset]:
    """All dense presets by name (fresh copies; edit freely)."""
    return {name: DensePreset.from_dict(p.to_dict()) for name, p in _PRESETS.items()}


def get_dense_preset(name: str) -> DensePreset:
    """One preset by name; unknown names raise ``KeyError`` listing the valid ones."""
    if name not in _PRESETS:
        raise KeyError(f"unknown dense preset {name!r}; valid: {', '.join(sorted(_PRESETS))}")
    return DensePreset.from_dict(_PRESETS[name].to_dict())


def load_preset(name_or_path: str) -> DensePreset:
    """A preset name, or a JSON file holding a preset dict (custom and tiny test configs)."""
    path = Path(name_or_path)
    if name_or_path.endswith(".json") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"dense preset file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"dense preset file {path} is not valid JSON: {exc}") from exc
        return DensePreset.from_dict(data)
    return get_dense_preset(name_or_path)

"""The banded segmentation loss (``segmentation_loss`` of an ``UnresizedPrediction``) equals the loss of
the full-resolution logits, values and gradients, without ever making the ``[B, K, H, W]`` map.

The reference is the original path: ``F.interpolate`` to the padded input, the crop, and
``F.cross_entropy`` (in float64 here, to tight tolerance; float32 against today's
``segmentation_loss(pred.resized())``). Models keep their outputs: ``forward(x, resize=False).resized()``
is ``forward(x)``.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from llava_vitsplit.dense import losses
from llava_vitsplit.dense.baseline import LinearSegmenter
from llava_vitsplit.dense.build import build_backbone, build_dense_model
from llava_vitsplit.dense.losses import segmentation_loss
from llava_vitsplit.dense.model import UnresizedPrediction
from llava_vitsplit.testing.dense_synthetic import tiny_preset
from llava_vitsplit.testing.op_log import OpLog

GEOMETRIES = [
    ((37, 37), (512, 512), (148, 148)),  # ADE20K-512: 4x head map, padded 518 cropped to 512
    ((3, 5), (40, 63), (12, 20)),  # odd sizes, crop on both sides
    ((4, 4), (56, 56), (4, 4)),  # no crop, 14x upsampling (the linear head's grid map)
]


def _reference(pred: torch.Tensor, labels: torch.Tensor, grid, patch: int, ignore_index: int) -> torch.Tensor:
    height, width = labels.shape[-2:]
    padded = F.interpolate(
        pred, size=(grid[0] * patch, grid[1] * patch), mode="bilinear", align_corners=False
    )
    return F.cross_entropy(padded[..., :height, :width], labels, ignore_index=ignore_index)


def _case(geometry, dtype, classes: int = 5, seed: int = 0):
    grid, input_hw, pred_hw = geometry
    gen = torch.Generator().manual_seed(seed)
    pred = (3 * torch.randn(2, classes, *pred_hw, generator=gen, dtype=dtype)).requires_grad_()
    labels = torch.randint(0, classes, (2, *input_hw), generator=gen)
    labels[0, : input_hw[0] // 3] = 255  # a block of ignored pixels
    labels[1, :, -3:] = 255
    return pred, labels, UnresizedPrediction(pred, grid, 14, input_hw)


@pytest.mark.parametrize("band_rows", [1, 7, 10_000], ids=["one-row-bands", "7-row-bands", "one-band"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["ade20k-512", "odd", "no-crop"])
def test_banded_loss_equals_full_resolution_cross_entropy_float64(monkeypatch, geometry, band_rows):
    pred, labels, prediction = _case(geometry, torch.float64)
    monkeypatch.setattr(losses, "BAND_ELEMENTS", band_rows * 2 * pred.shape[1] * labels.shape[-1])
    ours = segmentation_loss(prediction, labels)
    ref = _reference(pred, labels, geometry[0], 14, 255)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    (mine,) = torch.autograd.grad(ours * 1.7, pred)
    (theirs,) = torch.autograd.grad(ref * 1.7, pred)
    torch.testing.assert_close(mine, theirs, atol=1e-14, rtol=1e-10)


def test_banded_loss_equals_todays_float32_loss_and_keeps_the_input_dtype():
    pred, labels, prediction = _case(GEOMETRIES[0], torch.float32)
    ours = segmentation_loss(prediction, labels)
    ref = segmentation_loss(prediction.resized(), labels)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    (mine,) = torch.autograd.grad(ours, pred)
    (theirs,) = torch.autograd.grad(ref, pred)
    assert mine.dtype == torch.float32
    torch.testing.assert_close(mine, theirs, atol=1e-9, rtol=1e-4)


def test_banded_loss_never_makes_the_full_resolution_map(monkeypatch):
    pred, labels, prediction = _case(GEOMETRIES[0], torch.float32, classes=3)
    monkeypatch.setattr(losses, "BAND_ELEMENTS", 16 * 2 * 3 * 512)  # 16-row bands
    with OpLog() as log:
        segmentation_loss(prediction, labels).backward()
    full_map = labels.numel() * pred.shape[1]  # [B, K, 512, 512]
    big = [op for op in log.ops if op[2].is_floating_point and torch.Size(op[1]).numel() > full_map // 4]
    assert not big, big
    assert any(torch.Size(op[1]).numel() == 16 * 512 * 3 for op in log.ops)  # one image's 16-row band
    assert pred.grad is not None and pred.grad.shape == pred.shape


def test_banded_loss_without_gradients_and_with_every_pixel_ignored():
    pred, labels, prediction = _case(GEOMETRIES[1], torch.float64)
    with torch.no_grad():
        value = segmentation_loss(prediction, labels)
    torch.testing.assert_close(value, _reference(pred, labels, (3, 5), 14, 255).detach())
    ignored = torch.full_like(labels, 255)
    assert torch.isnan(segmentation_loss(prediction, ignored))  # as F.cross_entropy: 0 / 0
    assert torch.isnan(_reference(pred, ignored, (3, 5), 14, 255))


def _parameter_grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["vitsplit", "linear"])
def test_models_give_the_same_outputs_and_weight_gradients_either_way(kind):
    torch.set_num_threads(1)
    preset = tiny_preset("segmentation", num_classes=4)
    torch.manual_seed(0)
    backbone = build_backbone(preset.backbone)
    if kind == "vitsplit":
        model = build_dense_model([preset], backbone)
        run = lambda x, resize: model(x, resize=resize)[preset.name]  # noqa: E731
    else:
        model = LinearSegmenter(backbone, preset.num_classes)
        run = model
    model = model.double().train()
    x = torch.randn(2, 3, 45, 61, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 45, 61))
    unresized = run(x, resize=False)
    assert isinstance(unresized, UnresizedPrediction)
    full = run(x, resize=True)
    torch.testing.assert_close(unresized.resized(), full, atol=0, rtol=0)
    banded = _parameter_grads(model, segmentation_loss(run(x, resize=False), labels))
    reference = _parameter_grads(model, F.cross_entropy(run(x, resize=True), labels, ignore_index=255))
    assert banded.keys() == reference.keys() and banded
    for name in banded:
        torch.testing.assert_close(banded[name], reference[name], atol=1e-12, rtol=1e-9, msg=name)


def test_banded_loss_under_bfloat16_autocast_scores_in_float32():
    pred, labels, _ = _case(GEOMETRIES[1], torch.float32)
    low = pred.detach().to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = segmentation_loss(UnresizedPrediction(low, (3, 5), 14, (40, 63)), labels)
    ref = _reference(low.detach().double(), labels, (3, 5), 14, 255)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, atol=1e-6, rtol=1e-6)
    ours.backward()
    assert low.grad is not None and low.grad.dtype == torch.bfloat16

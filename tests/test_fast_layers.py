"""The faster layers of the dense speed-up equal the layers they replace (values and gradients).

- ``sampled_deform_conv3x3`` (CPU path of the deformable conv) vs ``torchvision.ops.deform_conv2d``;
  on CPU neither float32 nor bfloat16 goes through torchvision's kernel, and bf16 matmuls stay bf16.
- ``PixelUpsample2x`` vs ``nn.ConvTranspose2d(k=2, s=2)`` with the same weights and state-dict keys.
- ``resize_to_input`` vs ``F.interpolate`` to the padded size followed by the crop, without making the
  padded-size map.
- ``batch_norm_conv1x1`` (BatchNorm folded into the 1x1 classifier) vs ``conv(norm(x))``: outputs,
  gradients and running statistics, train and eval, float64 and under bfloat16 autocast.
- ``UpBlock`` (GroupNorm + GELU recomputed in backward) vs the plain sequence of its three layers.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

from llava_vitsplit.adapter import conv as conv_module
from llava_vitsplit.adapter.conv import DeformableConv3x3, sampled_deform_conv3x3, torchvision_compute_dtype
from llava_vitsplit.dense.heads import PixelUpsample2x, SegmentationHead, UpBlock, batch_norm_conv1x1
from llava_vitsplit.dense.model import resize_to_input
from llava_vitsplit.testing.op_log import OpLog


def _grads(out: torch.Tensor, inputs, seed: int = 1):
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, grad)


@pytest.mark.parametrize(
    "shape, offset_scale",
    [((2, 5, 7, 6, 9), 2.0), ((1, 3, 4, 5, 5), 0.0), ((1, 3, 4, 1, 1), 1.5), ((1, 2, 2, 3, 4), 8.0)],
    ids=["random-offsets", "zero-offsets", "1x1-map", "far-out-of-bounds"],
)
def test_sampled_deform_conv_equals_torchvision_with_gradients(shape, offset_scale):
    b, c, o, h, w = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    offset = (torch.randn(b, 18, h, w, generator=gen, dtype=torch.float64) * offset_scale).requires_grad_()
    weight = torch.randn(o, c, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = deform_conv2d(x, offset, weight, padding=(1, 1))
    ours = sampled_deform_conv3x3(x, offset, weight)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    # zero offsets (the initialisation) sit on the kinks of bilinear sampling: the offset gradient
    # must still take torchvision's one-sided derivative
    for mine, theirs in zip(_grads(ours, (x, offset, weight)), _grads(ref, (x, offset, weight)), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=1e-12)


def test_cpu_deformable_conv_never_calls_torchvision_kernel(monkeypatch):
    torch.manual_seed(0)
    dcn = DeformableConv3x3(4, 6)
    nn.init.normal_(dcn.offset.weight, std=0.3)
    x = torch.randn(2, 4, 5, 7)
    expected = deform_conv2d(x, dcn.offset(x), dcn.weight, padding=(1, 1))

    def refuse(*args, **kwargs):
        raise AssertionError("torchvision's deform_conv2d ran on CPU")

    monkeypatch.setattr(conv_module, "deform_conv2d", refuse)
    torch.testing.assert_close(dcn(x), expected, atol=1e-5, rtol=1e-5)


def test_cpu_bfloat16_deformable_conv_keeps_its_matmul_in_bfloat16():
    torch.manual_seed(0)
    dcn = DeformableConv3x3(8, 8)
    nn.init.normal_(dcn.offset.weight, std=0.2)
    x = torch.randn(2, 8, 6, 6)
    reference = dcn(x)
    dcn_bf16 = dcn.to(torch.bfloat16)
    with OpLog() as log:
        out = dcn_bf16(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    matmuls = [dtype for name, _, dtype in log.ops if name in ("mm", "bmm", "matmul")]
    assert matmuls and all(d == torch.bfloat16 for d in matmuls), log.ops
    assert not any(name == "deform_conv2d" for name, _, _ in log.ops)
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)


def test_torchvision_path_upcasts_only_dtypes_without_a_kernel():
    assert torchvision_compute_dtype("cuda", torch.float16) == torch.float16
    assert torchvision_compute_dtype("cuda", torch.bfloat16) == torch.float32
    assert torchvision_compute_dtype("cpu", torch.bfloat16) == torch.float32
    assert torchvision_compute_dtype("cpu", torch.float64) == torch.float64
    torch.manual_seed(0)
    dcn = DeformableConv3x3(3, 5).to(torch.bfloat16)
    nn.init.normal_(dcn.offset.weight, std=0.3)
    x = torch.randn(1, 3, 4, 4, dtype=torch.bfloat16)
    offset = dcn.offset(x)
    out = dcn.torchvision_forward(x, offset)  # the CUDA path, run here on CPU: upcast, cast back
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, sampled_deform_conv3x3(x, offset, dcn.weight), atol=0.1, rtol=0.05)


@pytest.mark.parametrize("c_in, c_out, h, w", [(6, 4, 3, 5), (16, 16, 1, 2)])
def test_pixel_upsample_equals_transposed_conv_with_gradients(c_in, c_out, h, w):
    torch.manual_seed(0)
    reference = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2).double()
    fast = PixelUpsample2x(c_in, c_out).double()
    assert fast.state_dict().keys() == reference.state_dict().keys()
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(2, c_in, h, w, dtype=torch.float64, requires_grad=True)
    ours, ref = fast(x), reference(x)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    mine = _grads(ours, (x, fast.weight, fast.bias))
    theirs = _grads(ref, (x, reference.weight, reference.bias))
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_segmentation_head_keeps_its_parameters_and_state_dict_keys():
    head = SegmentationHead(32, 7)
    assert list(head.state_dict()) == [
        "upsample.0.0.weight", "upsample.0.0.bias", "upsample.0.1.weight", "upsample.0.1.bias",
        "upsample.1.0.weight", "upsample.1.0.bias", "upsample.1.1.weight", "upsample.1.1.bias",
        "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked",
        "classifier.weight", "classifier.bias",
    ]  # fmt: skip
    assert sum(p.numel() for p in head.parameters()) == 2 * (32 * 32 * 4 + 32 + 2 * 32) + 2 * 32 + 32 * 7 + 7


@pytest.mark.parametrize(
    "grid, input_hw, pred_hw", [((37, 37), (512, 512), (148, 148)), ((3, 5), (40, 63), (12, 20))]
)
def test_resize_to_input_equals_interpolate_then_crop_without_the_padded_map(grid, input_hw, pred_hw):
    patch = 14
    pred = torch.randn(2, 3, *pred_hw, dtype=torch.float64, requires_grad=True)
    padded = (grid[0] * patch, grid[1] * patch)
    ref = F.interpolate(pred, size=padded, mode="bilinear", align_corners=False)[
        ..., : input_hw[0], : input_hw[1]
    ]
    with OpLog() as log:
        ours = resize_to_input(pred, grid, patch, input_hw)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(_grads(ours, (pred,))[0], _grads(ref, (pred,))[0], atol=1e-10, rtol=1e-10)
    if padded != input_hw:
        assert not any(shape[-2:] == padded for _, shape, _ in log.ops), log.ops


def _random_batch_norm(channels: int, momentum: float | None) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, momentum=momentum).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    return norm


@pytest.mark.parametrize("mode, momentum", [("train", 0.1), ("train", None), ("eval", 0.1)])
def test_folded_batch_norm_conv1x1_equals_norm_then_conv(mode, momentum):
    torch.manual_seed(0)
    norm, conv = _random_batch_norm(6, momentum), nn.Conv2d(6, 4, 1).double()
    ref_norm, ref_conv = copy.deepcopy(norm), copy.deepcopy(conv)
    for module in (norm, ref_norm):
        module.train(mode == "train")
    x = (torch.randn(3, 6, 5, 7, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    for _ in range(2):  # twice: the running statistics (and the cumulative average) advance alike
        with OpLog() as log:
            ours = batch_norm_conv1x1(x, norm, conv)
        ref = ref_conv(ref_norm(x))
    assert not any(name == "native_batch_norm" for name, _, _ in log.ops)  # the folded path ran
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    params = (x, norm.weight, norm.bias, conv.weight, conv.bias)
    ref_params = (x, ref_norm.weight, ref_norm.bias, ref_conv.weight, ref_conv.bias)
    for mine, theirs in zip(_grads(ours, params), _grads(ref, ref_params), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=1e-10)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(norm, name), getattr(ref_norm, name), atol=1e-12, rtol=1e-12)


def test_folded_batch_norm_conv1x1_under_bfloat16_autocast_keeps_float32_statistics():
    torch.manual_seed(0)
    norm, conv = nn.BatchNorm2d(16), nn.Conv2d(16, 5, 1)
    ref_norm, ref_conv = copy.deepcopy(norm), copy.deepcopy(conv)
    x = (torch.randn(2, 16, 6, 7) * 3 + 1).to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with OpLog() as log:
            ours = batch_norm_conv1x1(x, norm, conv)
        ref = ref_conv(ref_norm(x))
    assert not any(name == "native_batch_norm" for name, _, _ in log.ops)  # the folded path ran
    assert ours.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref.float(), atol=0.05, rtol=0.02)
    for name in ("running_mean", "running_var"):  # float32 statistics, as BatchNorm keeps them
        torch.testing.assert_close(getattr(norm, name), getattr(ref_norm, name), atol=1e-6, rtol=1e-5)
    params = (x, norm.weight, norm.bias, conv.weight, conv.bias)
    ref_params = (x, ref_norm.weight, ref_norm.bias, ref_conv.weight, ref_conv.bias)
    for mine, theirs in zip(_grads(ours, params), _grads(ref, ref_params), strict=True):
        assert mine.dtype == theirs.dtype
        scale = theirs.float().abs().max()
        torch.testing.assert_close(mine.float() / scale, theirs.float() / scale, atol=0.02, rtol=0.0)


def test_folded_batch_norm_conv1x1_falls_back_for_other_norms_and_mismatched_dtypes():
    torch.manual_seed(0)
    norm, conv = nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1)
    x = torch.randn(2, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16), OpLog() as log:
        out = batch_norm_conv1x1(x, norm, conv)  # float32 input under bf16 autocast
    assert any(name == "native_batch_norm" for name, _, _ in log.ops)
    assert out.dtype == torch.bfloat16
    group = nn.GroupNorm(2, 4)
    torch.testing.assert_close(batch_norm_conv1x1(x, group, conv), conv(group(x)))


def test_up_block_recomputes_its_norm_and_keeps_values_gradients_and_keys():
    torch.manual_seed(0)
    block = UpBlock(8, 16).double()
    reference = nn.Sequential(*(copy.deepcopy(m) for m in block))
    assert block.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64, requires_grad=True)
    saved: list[tuple[int, ...]] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        ours = block(x)
    ref = reference(x)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    mine = _grads(ours, (x, *block.parameters()))
    theirs = _grads(ref, (x, *reference.parameters()))
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert saved.count((2, 16, 6, 10)) == 1, saved  # only the upsampled map, not GroupNorm's output
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref)


def test_up_block_under_bfloat16_autocast_matches_the_plain_layers():
    torch.manual_seed(0)
    block = UpBlock(8, 64)  # 32 groups of 2 channels (one channel per group would zero the bias gradient)
    reference = nn.Sequential(*(copy.deepcopy(m) for m in block))
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = block(x), reference(x)
    assert ours.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref.float(), atol=0.02, rtol=0.02)
    for a, b in zip(
        _grads(ours, (x, *block.parameters())), _grads(ref, (x, *reference.parameters())), strict=True
    ):
        scale = b.float().abs().max()
        torch.testing.assert_close(a.float() / scale, b.float() / scale, atol=0.02, rtol=0.0)

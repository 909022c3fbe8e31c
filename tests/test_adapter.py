"""The ViT-Split adapter on its own: layer selection, sparse gate, convs, heads, shapes, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import deform_conv2d

from llava_vitsplit.adapter import (
    AdapterConfig,
    DeformableConv3x3,
    SparseLayerGate,
    ViTSplitAdapter,
    tokens_to_map,
    uniform_layer_indices,
)


def test_uniform_sampling_matches_the_paper():
    assert uniform_layer_indices(12, 4, 2) == [2, 5, 8, 11]
    assert uniform_layer_indices(24, 8, 2) == [2, 5, 8, 11, 14, 17, 20, 23]
    assert uniform_layer_indices(23, 1, 2) == [22]


def test_uniform_sampling_floor_vs_round():
    # step = (12-1-3)/3 = 2.667: round gives 3+[0,3,5,8], floor gives 3+[0,2,5,8]
    assert uniform_layer_indices(12, 4, 3, "round") == [3, 6, 8, 11]
    assert uniform_layer_indices(12, 4, 3, "floor") == [3, 5, 8, 11]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((12, 4, 12), "prior_start"),
        ((12, 0, 2), "num_prior"),
        ((4, 4, 2), "repeat"),
        ((12, 4, 2, "ceil"), "rounding"),
    ],
)
def test_uniform_sampling_rejects_bad_settings(args, message):
    with pytest.raises(ValueError, match=message):
        uniform_layer_indices(*args)


def test_adapter_config_rejects_unknown_and_invalid_fields():
    with pytest.raises(ValueError, match="unknown adapter setting"):
        AdapterConfig.from_dict({"num_task_layer": 1})
    with pytest.raises(ValueError, match="conv_type"):
        AdapterConfig(conv_type="dcnv4")
    with pytest.raises(ValueError, match="prior_layers"):
        AdapterConfig(prior_selection="explicit")
    assert AdapterConfig.from_dict(AdapterConfig().to_dict()) == AdapterConfig()


def test_sparse_gate_keeps_top_k_and_passes_gradient_to_scores():
    torch.manual_seed(0)
    gate = SparseLayerGate(num_layers=6, num_slots=2, top_k=3, temperature=0.5)
    gates = gate.gates()
    assert gates.shape == (6, 2)
    assert torch.equal((gates.detach() > 0).sum(0), torch.tensor([3, 3]))
    torch.testing.assert_close(gates.detach().sum(0), torch.ones(2))
    maps = torch.randn(6, 2, 4, 3, 3)  # [L, B, C, h, w]
    out = gate(maps)
    assert out.shape == (2, 8, 3, 3)
    out.square().sum().backward()
    assert gate.scores.grad is not None and gate.scores.grad.abs().sum() > 0
    # straight-through: even layers outside the top-k receive a gradient
    assert (gate.scores.grad != 0).all()


def test_deformable_conv_with_zero_offsets_equals_plain_conv():
    torch.manual_seed(0)
    dcn = DeformableConv3x3(5, 7)
    plain = nn.Conv2d(5, 7, 3, padding=1, bias=False)
    plain.weight.data.copy_(dcn.weight.data)
    x = torch.randn(2, 5, 6, 8)
    torch.testing.assert_close(dcn(x), plain(x), atol=1e-5, rtol=1e-5)


def _bilinear(x: torch.Tensor, y: float, xx: float) -> torch.Tensor:
    """Bilinear sample of ``x [C, H, W]`` at (y, xx) with zeros outside (the DCN convention)."""
    c, h, w = x.shape
    y0, x0 = int(torch.floor(torch.tensor(y))), int(torch.floor(torch.tensor(xx)))
    out = torch.zeros(c)
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            if 0 <= yi < h and 0 <= xi < w:
                out += x[:, yi, xi] * (1 - abs(y - yi)) * (1 - abs(xx - xi))
    return out


def test_deformable_conv_matches_a_bilinear_reference_with_offsets():
    torch.manual_seed(0)
    c_in, c_out, h, w = 2, 3, 4, 5
    x = torch.randn(1, c_in, h, w)
    weight = torch.randn(c_out, c_in, 3, 3)
    offset = torch.randn(1, 18, h, w) * 0.7  # [B, 2*3*3, h, w], (dy, dx) per kernel tap
    ours = deform_conv2d(x, offset, weight, padding=(1, 1))
    ref = torch.zeros(1, c_out, h, w)
    for i in range(h):
        for j in range(w):
            acc = torch.zeros(c_out)
            for k in range(9):
                ky, kx = divmod(k, 3)
                dy, dx = offset[0, 2 * k, i, j].item(), offset[0, 2 * k + 1, i, j].item()
                sample = _bilinear(x[0], i - 1 + ky + dy, j - 1 + kx + dx)  # [C_in]
                acc += weight[:, :, ky, kx] @ sample
            ref[0, :, i, j] = acc
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    # and our module uses exactly that op with its predicted offsets
    dcn = DeformableConv3x3(c_in, c_out)
    dcn.weight.data.copy_(weight)
    nn.init.normal_(dcn.offset.weight, std=0.3)
    predicted = dcn.offset(x)
    torch.testing.assert_close(
        dcn(x), deform_conv2d(x, predicted, weight, padding=(1, 1)), atol=1e-5, rtol=1e-5
    )


def test_deformable_conv_runs_in_bfloat16_forward_and_backward():
    dcn = DeformableConv3x3(4, 4).to(torch.bfloat16)
    x = torch.randn(2, 4, 5, 5, dtype=torch.bfloat16, requires_grad=True)
    y = dcn(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad is not None and dcn.weight.grad is not None and dcn.weight.grad.dtype == torch.bfloat16


class _Block(nn.Module):
    """A stand-in transformer block: ``[B, T, C] -> [B, T, C]``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.lin = nn.Linear(c, c)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


def _tower_states(blocks, x):
    states = [x]
    for b in blocks:
        x = b(x)
        states.append(x)
    return states


@pytest.mark.parametrize("selection", ["uniform", "explicit", "sparse_gate"])
@pytest.mark.parametrize("conv_type", ["deformable", "plain"])
@pytest.mark.parametrize("keeps_prefix", [True, False])
def test_adapter_shapes_for_every_path(selection, conv_type, keeps_prefix):
    torch.manual_seed(0)
    c, n_blocks, prefix, grid = 8, 6, 1, (3, 4)
    blocks = nn.ModuleList(_Block(c) for _ in range(n_blocks)).requires_grad_(False)
    config = AdapterConfig(
        num_task_layers=2,
        prior_selection=selection,
        num_prior_layers=3,
        prior_start=1,
        prior_layers=[0, 3],
        gate_top_k=2,
        conv_type=conv_type,
        fusion_channels=16,
        task_head_keeps_prefix=keeps_prefix,
    )
    adapter = ViTSplitAdapter(config, blocks, num_layers=n_blocks, channels=c, num_prefix_tokens=prefix)
    with torch.no_grad():
        states = _tower_states(blocks, torch.randn(2, prefix + 12, c))
    out = adapter(states, grid)
    assert out.shape == (2, 16, 3, 4)
    out.sum().backward()
    assert all(p.grad is None for p in blocks.parameters())
    assert all(p.grad is not None for p in adapter.parameters() if p.requires_grad)


def test_task_head_copies_the_last_blocks_and_reproduces_the_tower_at_init():
    torch.manual_seed(0)
    blocks = nn.ModuleList(_Block(8) for _ in range(5)).requires_grad_(False)
    adapter = ViTSplitAdapter(
        AdapterConfig(num_task_layers=2, num_prior_layers=2, prior_start=0), blocks, 5, 8, 1
    )
    with torch.no_grad():
        states = _tower_states(blocks, torch.randn(2, 1 + 6, 8))
    assert adapter.task_input_index == 3
    task = adapter.task_features(states, (2, 3))
    torch.testing.assert_close(task, tokens_to_map(states[5][:, 1:], (2, 3)))
    # a copy, not the same modules: training the head leaves the tower alone
    assert all(p.requires_grad for p in adapter.task_head.parameters())
    assert adapter.task_head.blocks[0].lin.weight is not blocks[3].lin.weight


def test_adapter_rejects_mismatched_inputs():
    blocks = nn.ModuleList(_Block(4) for _ in range(3))
    with pytest.raises(ValueError, match="exceed"):
        ViTSplitAdapter(AdapterConfig(num_task_layers=4), blocks, 3, 4, 1)
    with pytest.raises(ValueError, match="out of range"):
        ViTSplitAdapter(AdapterConfig(prior_selection="explicit", prior_layers=[5]), blocks, 3, 4, 1)
    adapter = ViTSplitAdapter(AdapterConfig(num_prior_layers=2, prior_start=0), blocks, 3, 4, 1)
    with pytest.raises(ValueError, match="hidden states"):
        adapter([torch.zeros(1, 5, 4)] * 2, (2, 2))
    with pytest.raises(ValueError, match="patch tokens"):
        adapter([torch.zeros(1, 5, 4)] * 4, (3, 3))


def test_prior_head_and_fusion_parameter_counts_match_the_released_llava_connector():
    from llava_vitsplit.adapter import FusionNet, PriorHead

    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(PriorHead(1, 1024, "plain")) == 10_487_808
    assert n(FusionNet(1024, 4096, "plain")) == 159_391_744
    # deformable: 3x3 weight without bias + an offset conv C -> 18 with bias
    assert n(PriorHead(1, 1024, "deformable")) == 1024 * 1024 + 1024 + 9 * 1024 * 1024 + (1024 * 18 * 9 + 18)

"""The training benchmark's FLOP count and MFU arithmetic (``bench/train_mfu.py``, ``bench/bench_common.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_common import count_gflops  # noqa: E402
from train_mfu import add_mfu, matmul_peak_gflops  # noqa: E402


def test_cpu_attention_is_counted_forward_and_backward():
    q, k, v = (torch.randn(1, 2, 64, 32, requires_grad=True) for _ in range(3))  # [B, H, L, d]
    forward = count_gflops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    both = count_gflops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward())
    assert forward * 1e9 == 4 * 1 * 2 * 64 * 64 * 32  # Q K^T and P V, 2 FLOPs per multiply-add
    assert both == pytest.approx(3.5 * forward)  # backward: QK^T again, dV, dP, dQ, dK (torch's formula)


def test_matmul_peak_reports_wall_and_cpu_rates():
    peak = matmul_peak_gflops(torch.float32, 64, seconds=0.05)
    assert set(peak) == {"wall", "cpu"} and all(v > 0 for v in peak.values())


def test_mfu_and_ratio_to_trl():
    rows = [
        {"size": "s", "stage": "2", "stack": "mlp", "gflops_per_token": 2.0, "tokens_per_s": 30.0,
         "tokens_per_cpu_s": 40.0},
        {"size": "s", "stage": "2", "stack": "trl-mlp", "gflops_per_token": 2.0, "tokens_per_s": 20.0,
         "tokens_per_cpu_s": 32.0},
    ]  # fmt: skip
    add_mfu(rows, {"fp32": {"wall": 100.0, "cpu": 80.0}, "bf16": {"wall": 1.0, "cpu": 1.0}})
    assert rows[0]["mfu_wall"] == pytest.approx(0.6) and rows[0]["mfu_cpu"] == pytest.approx(1.0)
    assert rows[0]["vs_trl"] == pytest.approx(1.5) and rows[0]["vs_trl_cpu"] == pytest.approx(1.25)
    assert "vs_trl" not in rows[1]

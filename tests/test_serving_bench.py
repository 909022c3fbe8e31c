"""``bench/serving_clients.py``: concurrent clients, TTFT / inter-token latency and percentiles (no engine)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from serving_clients import percentiles, run_clients  # noqa: E402


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0}
    assert percentiles([0.2], scale=1000, digits=1) == {"p50": 200.0, "p95": 200.0}


def fake_call(first_s: float, gap_s: float, tokens: int):
    """A streamed reply: the first piece after ``first_s``, then one piece per token every ``gap_s``."""

    def call():
        time.sleep(first_s)
        yield None
        for _ in range(tokens - 1):
            time.sleep(gap_s)
            yield None
        yield tokens

    return call


def test_clients_run_at_once_and_latencies_are_per_request():
    summary = run_clients([fake_call(0.05, 0.01, 5) for _ in range(4)], per_client=2, new_tokens=5)
    assert summary["clients"] == 4 and summary["requests"] == 8 and summary["tokens_per_request"] == [5]
    assert summary["seconds"] < 2 * 0.09 * 4  # the 4 clients overlapped (each sends 2 in turn)
    assert summary["ttft_s"]["p50"] == pytest.approx(0.05, abs=0.04)
    assert summary["itl_ms"]["p50"] == pytest.approx(10, abs=8)
    # both figures are rounded (seconds to 1 ms, the rate to 0.1 token/s): they agree to well under 1 %
    assert summary["output_tokens_per_s"] == pytest.approx(40 / summary["seconds"], rel=0.01)


def test_a_failed_client_fails_the_run():
    def broken():
        yield None
        raise ConnectionError("server went away")

    with pytest.raises(ConnectionError, match="went away"):
        run_clients([fake_call(0.0, 0.0, 3), broken], per_client=1, new_tokens=3)

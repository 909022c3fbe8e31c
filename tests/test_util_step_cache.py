"""``StepCache``: a step reruns exactly when its settings changed, an output is missing, or on ``force``."""

from __future__ import annotations

import pytest

from llava_vitsplit.util.step_cache import StepCache


def test_a_step_reruns_only_when_its_settings_or_outputs_change(tmp_path):
    runs = []
    out = tmp_path / "out.txt"

    def step() -> None:
        runs.append(1)
        out.write_text("done")

    cache = StepCache(tmp_path / "steps")
    assert cache.run("make", {"n": 1}, [out], step) is not None
    assert cache.run("make", {"n": 1}, [out], step) is None  # finished: skipped
    assert cache.run("make", {"n": 2}, [out], step) is not None  # new settings
    out.unlink()
    assert cache.run("make", {"n": 2}, [out], step) is not None  # output gone
    assert StepCache(tmp_path / "steps", force=True).run("make", {"n": 2}, [out], step) is not None
    assert len(runs) == 4
    assert cache.finished("make", {"n": 2}, [out])["settings"] == {"n": 2}
    assert cache.finished_at("make") is not None and cache.finished_at("other") is None


def test_a_failed_step_leaves_no_stamp(tmp_path):
    cache = StepCache(tmp_path / "steps")

    def fail() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.run("make", {}, [], fail)
    assert not cache.stamp("make").exists()
    assert cache.finished("make", {}, []) is None

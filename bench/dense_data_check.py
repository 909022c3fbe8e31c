"""Cost of the dense data check and of per-sample augmentation seeding, side by side in one run.

Generates an ADE20K-sized shapes set (``--size`` px PNG images + labels) and times:

- ``validate_split`` with 1 and with ``--workers`` reader threads (every image and label decoded once);
- a cache hit of ``cached_validation`` (only the file listing and ``stat`` calls);
- loading + augmenting ``--items`` training samples plainly vs through ``SeededSamples`` (each item under
  its own torch seed, the caller's RNG restored), the exact-resume overhead per sample.

Each pair is run alternately ``--repeats`` times and the medians are compared.

    .venv/bin/python bench/dense_data_check.py --samples 200 --size 512 --workers 2 --items 100 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _medians(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, run alternately ``repeats`` times (a shared, loaded machine)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_timed(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    import torch

    from llava_vitsplit.dense.pipeline import build_dataset
    from llava_vitsplit.dense.resume import SeededSamples
    from llava_vitsplit.dense.validate import cached_validation, validate_split
    from llava_vitsplit.testing.dense_synthetic import make_segmentation_set, tiny_preset

    torch.set_num_threads(1)
    preset = tiny_preset(crop_size=(args.size, args.size), test_size=None, scale_range=(0.5, 2.0))
    preset = preset.replace(test_size=(args.size, args.size))
    with tempfile.TemporaryDirectory() as tmp:
        root = make_segmentation_set(Path(tmp) / "data", n_train=args.samples, n_val=0, size=args.size)
        check = lambda workers: validate_split(preset, root, "train", workers=workers, progress=False)  # noqa: E731
        checks = _medians({"one": lambda: check(1), "many": lambda: check(args.workers)}, args.repeats)
        one, many = checks["one"], checks["many"]
        cache = Path(tmp) / "cache.json"
        cached_validation(preset, root, "train", None, cache, workers=args.workers, progress=False)
        hit = _timed(lambda: cached_validation(preset, root, "train", None, cache, progress=False))
        dataset = build_dataset(preset, root, "train", train=True)
        seeded = SeededSamples(dataset)
        count = min(args.items, len(dataset))
        loads = _medians(
            {
                "plain": lambda: [dataset[i] for i in range(count)],
                "seeded": lambda: [seeded[(i, i)] for i in range(count)],
            },
            args.repeats,
        )
        plain_s, seeded_s = loads["plain"], loads["seeded"]
    result = {
        "samples": args.samples,
        "size": args.size,
        "check_1_thread_s": round(one, 2),
        f"check_{args.workers}_threads_s": round(many, 2),
        "speedup": round(one / many, 2),
        "samples_per_s": round(args.samples / many, 1),
        "cache_hit_s": round(hit, 3),
        "load_augment_plain_ms": round(1000 * plain_s / count, 2),
        "load_augment_seeded_ms": round(1000 * seeded_s / count, 2),
        "seeded_over_plain": round(seeded_s / plain_s, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

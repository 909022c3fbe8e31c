"""Cost of ``llava-vitsplit answer``'s image check: every image fully decoded before the first batch.

Writes ``--images`` photo-like JPEGs (``--size``, smooth gradients plus noise, quality 90, about the
size of a COCO val2014 photo) into a temporary folder and times ``find_bad_images`` over them with each
``--workers`` count, the counts alternating run by run so machine load affects them alike. Reports the
median wall time and images per second; the check decodes each distinct file once.
usage: python bench/answer_image_check.py [--images 300] [--size 640x480] [--workers 1 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from llava_vitsplit.serve.answer_images import find_bad_images


def write_photos(folder: Path, count: int, width: int, height: int) -> list[dict]:
    """``count`` JPEG questions whose images compress like photos (not like flat colour)."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width]  # [H, W]
    questions = []
    for index in range(count):
        base = (xs * (index % 7 + 1) + ys * (index % 5 + 1)) % 256  # [H, W]
        pixels = np.stack([base, base[::-1], base[:, ::-1]], axis=-1)  # [H, W, 3]
        pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)
        questions.append({"question_id": index, "image": f"{index}.jpg", "text": "?"})
    return questions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="write every run's time here")
    args = parser.parse_args(argv)
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        questions = write_photos(folder, args.images, width, height)
        megabytes = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        times: dict[int, list[float]] = {w: [] for w in args.workers}
        for _ in range(args.repeats):
            for workers in args.workers:
                start = time.perf_counter()
                bad = find_bad_images(questions, folder, workers)
                times[workers].append(time.perf_counter() - start)
                assert not bad, bad[:3]
    print(f"{args.images} JPEGs {width}x{height}, {megabytes / args.images * 1024:.0f} KB each on average")
    print("| workers | median time | images/s |\n|---:|---:|---:|")
    for workers, runs in times.items():
        median = statistics.median(runs)
        print(f"| {workers} | {median:.2f} s | {args.images / median:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({str(w): runs for w, runs in times.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

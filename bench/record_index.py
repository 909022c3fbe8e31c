"""Training-data startup and memory: the record index vs the eager record list, ranks x DataLoader workers.

Generates a file shaped like ``llava_v1_5_mix665k.json`` (``--records``, ``--bytes``: by default 665,000
records, about 1 GB; 1 in 16 text-only, 1 to 8 turn pairs) under ``--workdir`` (deleted afterwards
unless ``--keep``), then starts ``--ranks`` processes at once per loader. Each builds the dataset (plus
the sampler's modality lengths) and reports its startup time and RSS before/after; then a DataLoader
with ``--workers`` forked workers fetches ``--fetches`` samples per worker (image decoded, text
tokenized), each worker reporting its RSS and USS (private memory: pages copied on write) at its first
and last fetch. Loaders, in this order: ``indexed`` on a fresh index (first start: one rank builds,
the other waits), ``indexed`` again (cached), then both loaders on a prefix of ``--eager-fraction`` of
the records (the eager list of the whole file holds several GB per rank: more than a shared box has).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python bench/record_index.py --workdir /tmp/record_index_bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
from bench_common import machine_line

from llava_vitsplit.data import IMAGE_TAG, LazySupervisedDataset
from llava_vitsplit.data.dataset import count_image_tokens
from llava_vitsplit.data.mixture import DataSource
from llava_vitsplit.data.templates import get_template
from llava_vitsplit.testing.llava_mix import eager_records, write_llava_mix, write_mix_images
from llava_vitsplit.testing.tiny_parts import save_tiny_parts

MIB = 1 << 20


def memory() -> dict[str, float]:
    info = psutil.Process().memory_full_info()
    return {"rss_mib": info.rss / MIB, "uss_mib": info.uss / MIB}


class EagerDataset(LazySupervisedDataset):
    """The dataset as it was before the index: every record parsed into Python lists, on every rank."""

    def __init__(self, path: Path, processor, image_folder: Path) -> None:  # no super(): the old loading
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.sources = [DataSource("data", (Path(path),), Path(image_folder))]
        self.templates = [get_template("vicuna_v1")]
        self.model_max_length = 2048
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TAG)
        self.num_image_tokens = count_image_tokens(processor)
        self.problems, self._reported = Counter(), set()
        self.records = eager_records([path])

    def __len__(self) -> int:
        return len(self.records.samples)

    def sample(self, index: int):
        return self.records.samples[index]

    def place(self, index: int) -> str:
        return self.records.places[index]

    def source_number(self, index: int) -> int:
        return 0

    @property
    def modality_lengths(self) -> list[int]:
        return self.records.modality_lengths(self.num_image_tokens)


class Probe:
    """Fetches samples; reports the fetching process's memory at its first and ``last`` fetch."""

    def __init__(self, dataset, last: int) -> None:
        self.dataset, self.last, self.fetched = dataset, last, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        self.fetched += 1
        out = {"tokens": len(item["input_ids"])}
        if self.fetched in (1, self.last):
            out["probe"] = {"pid": os.getpid(), "fetched": self.fetched, **memory()}
        return out


def rank_job(args) -> None:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from llava_vitsplit.model.parts import processor_from_parts

    torch.set_num_threads(1)
    processor = processor_from_parts(str(args.parts / "vision"), str(args.parts / "llm"))
    before = memory()
    start = time.perf_counter()
    if args.loader == "eager":
        dataset = EagerDataset(args.data, processor, args.images)
    else:
        dataset = LazySupervisedDataset(args.data, processor, image_folder=args.images)
    lengths = dataset.modality_lengths  # the sampler's input: part of every start
    startup = time.perf_counter() - start
    after = memory()
    order = np.random.default_rng(args.rank).choice(len(lengths), args.workers * args.fetches).tolist()
    loader = DataLoader(
        Probe(dataset, args.fetches),
        batch_size=None,
        sampler=order,
        num_workers=args.workers,
        multiprocessing_context="fork",
    )
    probes = [item["probe"] for item in loader if "probe" in item]
    workers = {}
    for probe in probes:
        workers.setdefault(probe["pid"], {})[probe["fetched"]] = probe
    report = {"startup_s": startup, "before": before, "after": after, "end": memory(), "workers": workers}
    print("RESULT " + json.dumps(report), flush=True)


def run_ranks(args, loader: str, data: Path) -> list[dict]:
    """Start ``args.ranks`` rank jobs at once; their reports."""
    common = [
        "--parts",
        args.parts,
        "--images",
        args.images,
        "--workers",
        args.workers,
        "--fetches",
        args.fetches,
    ]
    command = [sys.executable, __file__, "--rank-job", "--loader", loader, "--data", data] + common
    procs = [
        subprocess.Popen(
            [str(a) for a in [*command, "--rank", rank]],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "LLAVA_VITSPLIT_INDEX_DIR": str(args.workdir / "index")},
        )
        for rank in range(args.ranks if loader != "eager" else args.eager_ranks)
    ]
    reports = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{loader} rank failed ({proc.returncode}):\n{out[-3000:]}")
        reports.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    return reports


def summarise(name: str, reports: list[dict]) -> dict:
    workers = [w for r in reports for w in r["workers"].values()]
    last = max(int(k) for w in workers for k in w)
    return {
        "loader": name,
        "startup_s": [round(r["startup_s"], 2) for r in reports],
        "rank_rss_mib": [round(r["after"]["rss_mib"]) for r in reports],
        "data_rss_mib": [round(r["after"]["rss_mib"] - r["before"]["rss_mib"]) for r in reports],
        "worker_rss_first_last_mib": [
            (round(w["1"]["rss_mib"]), round(w[str(last)]["rss_mib"])) for w in workers if str(last) in w
        ],
        "worker_uss_growth_mib": [
            round(w[str(last)]["uss_mib"] - w["1"]["uss_mib"]) for w in workers if str(last) in w
        ],
    }


def prepare(args) -> tuple[Path, Path]:
    args.workdir.mkdir(parents=True, exist_ok=True)
    save_tiny_parts(args.parts, Path(__file__).resolve().parents[1] / "tests" / "data")
    write_mix_images(args.images)
    full = write_llava_mix(args.workdir / "mix665k.json", args.records, seed=0, target_bytes=args.bytes)
    prefix_records = int(args.records * args.eager_fraction)
    prefix_bytes = int(args.bytes * args.eager_fraction)
    prefix = write_llava_mix(args.workdir / "prefix.json", prefix_records, seed=0, target_bytes=prefix_bytes)
    return full, prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/record_index_bench"))
    parser.add_argument("--records", type=int, default=665_000)
    parser.add_argument("--bytes", type=int, default=1_030_000_000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fetches", type=int, default=200)
    parser.add_argument("--eager-fraction", type=float, default=0.125)
    parser.add_argument("--eager-ranks", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    # internal: one rank
    parser.add_argument("--rank-job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loader", default="indexed", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--parts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_job:
        rank_job(args)
        return
    args.parts, args.images = args.workdir / "parts", args.workdir / "images"
    results = {"machine": machine_line("cpu"), "load_average_start": os.getloadavg()}
    try:
        start = time.perf_counter()
        full, prefix = prepare(args)
        results["generate_s"] = round(time.perf_counter() - start, 1)
        results["file_mb"] = round(full.stat().st_size / 1e6)
        results["prefix_mb"] = round(prefix.stat().st_size / 1e6)
        runs = [
            ("indexed, first start", "indexed", full),
            ("indexed, cached", "indexed", full),
            ("eager (prefix)", "eager", prefix),
            ("indexed (prefix), first start", "indexed", prefix),
            ("indexed (prefix), cached", "indexed", prefix),
        ]
        results["runs"] = [summarise(name, run_ranks(args, loader, data)) for name, loader, data in runs]
        results["load_average_end"] = os.getloadavg()
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

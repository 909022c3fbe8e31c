"""Exact resume: data order, augmentation and RNG as functions of (seed, epoch, sample), saved positions.

- ``EpochSampler`` draws epoch ``e``'s order from a generator seeded with ``(seed, e)`` and yields
  ``(index, sample_seed)`` pairs; ``resume_at(epoch, position)`` skips what a killed run already used.
- ``SeededSamples`` runs each item's augmentation under its own torch seed (the caller's RNG is restored
  afterwards), so crops and flips do not depend on worker count, worker assignment or a restart.
- ``BatchStream`` yields batches forever and counts the epoch and the position inside it; before each
  epoch it reseeds the data loader's generator, which seeds the workers.
- ``rng_state`` / ``set_rng_state``: Python, NumPy, torch and CUDA RNG in a ``weights_only`` form.
- ``cut_log``: ``log.jsonl`` without the records after the resumed step (and any torn last line).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from llava_vitsplit.util.atomic import write_lines

_WORKER_STREAM = 1  # separates the worker seeds from the sample-order stream of the same epoch


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (NumPy ``SeedSequence``)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class EpochSampler(Sampler):
    """Indices of ``size`` samples as ``(index, sample_seed)``, shuffled per epoch from ``(seed, epoch)``."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self.epoch = 0
        self._skip: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, position: int) -> None:
        """The next pass over ``epoch`` starts after its first ``position`` samples."""
        self._skip = (epoch, position)

    def _start(self) -> int:
        return self._skip[1] if self._skip is not None and self._skip[0] == self.epoch else 0

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, epoch = self._start(), self.epoch
        self._skip = None
        for index in self.order(epoch)[start:]:
            yield index, mix_seed(self.seed, epoch, index)

    def __len__(self) -> int:
        return max(self.size - self._start(), 0)


class SeededSamples(Dataset):
    """``dataset[index]`` computed under torch seed ``sample_seed`` for keys ``(index, sample_seed)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class BatchStream:
    """Batches forever from a prepared loader over an ``EpochSampler``; ``state()`` is where it stands.

    ``samples_per_step`` is what one step consumes over all processes (batch size x processes).
    """

    def __init__(
        self, loader, sampler: EpochSampler, generator: torch.Generator, samples_per_step: int
    ) -> None:
        self.loader, self.sampler, self.generator = loader, sampler, generator
        self.samples_per_step = samples_per_step
        self.epoch, self.position = 0, 0
        self._batches: Iterator | None = None

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = None

    def _start_epoch(self) -> None:
        self.generator.manual_seed(mix_seed(self.sampler.seed, self.epoch, _WORKER_STREAM))
        if self.position:
            self.sampler.resume_at(self.epoch, self.position)
        self.sampler.set_epoch(self.epoch)
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(self.epoch)
        self._batches = iter(self.loader)

    def __next__(self):
        for _ in range(2):  # at most one epoch boundary per batch
            if self._batches is None:
                self._start_epoch()
            try:
                batch = next(self._batches)  # type: ignore[arg-type]
            except StopIteration:
                self._batches, self.epoch, self.position = None, self.epoch + 1, 0
                continue
            self.position += self.samples_per_step
            return batch
        raise RuntimeError("the training set yields no batch: it is smaller than one batch")


def rng_state() -> dict[str, Any]:
    """This process's RNG state in tensors and plain containers (loadable with ``weights_only=True``)."""
    return {
        "python": random.getstate(),
        "numpy": numpy_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    numpy = state["numpy"]
    random.setstate(_as_tuples(state["python"]))
    np.random.set_state(
        (
            numpy["name"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def numpy_state(state: tuple) -> dict[str, Any]:
    """An ``np.random.get_state()`` tuple as tensors and plain values."""
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def cut_log(path: str | Path, step: int) -> int:
    """Keep the records of ``log.jsonl`` up to ``step`` (and drop a torn line); returns how many were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_lines(path, kept)
    return dropped

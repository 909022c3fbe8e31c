"""Modality- and length-grouped sampling (LLaVA's ``--group_by_modality_length``).

Every global step (``batch_size * world_size`` consecutive indices) holds samples of one modality
(image or text-only), drawn from a window of similar lengths, so batches are not mostly padding and
no rank waits on another's longer batch. Image and text steps are interleaved in a random order.
Given the seed and epoch (``set_epoch``, called by the Trainer) the order is fixed, so a resumed run
sees the same data as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def modality_length_grouped_indices(
    lengths: Sequence[int],
    batch_size: int,
    world_size: int,
    generator: torch.Generator,
    window_steps: int = 32,
    group_by_length: bool = True,
) -> list[int]:
    """Indices in training order; ``lengths`` > 0 for image samples, < 0 for text-only ones."""
    step = batch_size * world_size
    steps: list[list[int]] = []
    leftovers: list[int] = []
    for modality in (lambda n: n > 0, lambda n: n < 0):
        members = [i for i, n in enumerate(lengths) if modality(n)]
        if not members:
            continue
        order = [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
        window = step * window_steps if group_by_length else step
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            if group_by_length:
                chunk = sorted(chunk, key=lambda i: -abs(lengths[i]))
            full = len(chunk) - len(chunk) % step
            steps.extend(chunk[s : s + step] for s in range(0, full, step))
            leftovers.extend(chunk[full:])
    shuffled = [steps[j] for j in torch.randperm(len(steps), generator=generator).tolist()]
    return [i for group in shuffled for i in group] + leftovers


class ModalityLengthGroupedSampler(Sampler[int]):
    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        world_size: int = 1,
        seed: int = 0,
        group_by_length: bool = True,
    ) -> None:
        if any(n == 0 for n in lengths):
            raise ValueError("modality lengths must be non-zero (positive: image, negative: text-only)")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(
            modality_length_grouped_indices(
                self.lengths,
                self.batch_size,
                self.world_size,
                generator,
                group_by_length=self.group_by_length,
            )
        )

"""Sequence packing (``--packing True``): a micro-batch's samples placed into fewer rows, the loss unchanged.

The collator packs the samples it is given, so every optimizer step sees exactly the samples, tokens and
label count of the unpacked run (data order, ``num_items_in_batch`` and resume are untouched); only the
padding goes. Three things make a packed row compute what separate rows compute:

- ``position_ids`` restart at 0 for each sample (rotary positions as unpacked), and the batch carries no
  ``attention_mask``: transformers then reads the restarts as sample boundaries
  (``masking_utils.find_packed_sequence_indices``) and builds a block-causal mask for SDPA, eager and
  flex attention. Flash-attention takes its varlen boundaries from ``position_ids`` only when the batch
  has one row, so for it every sample goes into one row (``ROW_LAYOUT``).
- A sample's first label is ignored: in a separate row it is never a target (the causal loss shifts by
  one), in a packed row the previous sample's last token would otherwise learn to predict it.
- ``pixel_values`` follow the samples' packed order: transformers' Llava fills the ``<image>`` runs of
  ``input_ids`` row-major with the images in order, so each sample keeps its own images, in tag order.

Padding after a row's last sample gets positions ``0, 1, ...`` of its own (a segment of its own that no
sample attends to) and ignored labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llava_vitsplit.data.encoding import IGNORE_INDEX

# How packed samples are laid out per attention implementation: "rows" of at most --model_max_length
# tokens (block-causal mask from the position ids), or "one_row" (flash-attention's varlen from the
# position ids needs a batch of one row). An implementation missing here would let samples attend to
# each other, so packing refuses it.
ROW_LAYOUT = {
    "sdpa": "rows",
    "eager": "rows",
    "flex_attention": "rows",
    "flash_attention_2": "one_row",
    "flash_attention_3": "one_row",
}


def packing_layout(attn_implementation: str) -> str:
    """``rows`` or ``one_row`` for ``attn_implementation`` (``ROW_LAYOUT``); a clear error for any other."""
    try:
        return ROW_LAYOUT[attn_implementation]
    except KeyError:
        raise ValueError(
            f"--packing True cannot keep samples apart with --attn_implementation {attn_implementation}: "
            f"supported are {', '.join(sorted(ROW_LAYOUT))}"
        ) from None


def first_fit_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Sample indices per row: first-fit decreasing into rows of at most ``capacity`` tokens.

    Deterministic (ties keep the given order); each row lists its samples in the given order. A sample
    longer than ``capacity`` gets a row of its own.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if lengths[index] <= free), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= lengths[index]
    return [sorted(row) for row in rows]


def fewest_positions_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """``first_fit_rows`` at the row capacity that computes the fewest positions (rows x longest row).

    The capacities tried are multiples of the longest sample up to ``max_length``, and ``max_length``:
    at the longest sample's length the batch is never wider than padded rows, so packing never computes
    more positions than padding would (ties: the smaller capacity)."""
    longest = max(lengths)
    capacities = sorted({*range(longest, max_length + 1, longest), max(longest, max_length)})
    best = None
    for capacity in capacities:
        rows = first_fit_rows(lengths, capacity)
        positions = len(rows) * max(sum(lengths[i] for i in row) for row in rows)
        if best is None or positions < best[0]:
            best = (positions, rows)
    return best[1]


@dataclass
class PackingCollator:
    """``input_ids``/``labels``/``position_ids`` [R, T] with R <= B rows; ``pixel_values`` [N_img, 3, H, W].

    ``max_length`` bounds a row (``--model_max_length``; ``fewest_positions_rows`` picks the capacity);
    ``layout`` comes from ``packing_layout``.
    The batch has no ``attention_mask`` (see the module docstring).
    """

    pad_token_id: int
    max_length: int
    layout: str = "rows"

    def rows(self, items: list[dict[str, torch.Tensor]]) -> list[list[int]]:
        if self.layout == "one_row":
            return [list(range(len(items)))]
        return fewest_positions_rows([len(item["input_ids"]) for item in items], self.max_length)

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        rows = self.rows(items)
        lengths = [sum(len(items[i]["input_ids"]) for i in row) for row in rows]
        width = max(lengths)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)  # [R, T]
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # [R, T]
        position_ids = torch.arange(width).repeat(len(rows), 1)  # [R, T]; padding: its own 0, 1, ...
        images = []
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                item = items[i]
                n = len(item["input_ids"])
                input_ids[r, start : start + n] = item["input_ids"]
                labels[r, start : start + n] = item["labels"]
                labels[r, start] = IGNORE_INDEX  # never a target unpacked: keep the previous sample off it
                position_ids[r, start : start + n] = torch.arange(n)
                start += n
                if "pixel_values" in item:
                    images.append(item["pixel_values"])
            position_ids[r, start:] = torch.arange(width - start)
        batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        if images:
            batch["pixel_values"] = torch.cat(images)  # [N_img, 3, H, W], in packed (row-major) order
        return batch

"""Batch collation: right-pad ids and labels, concatenate the samples' images in order."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llava_vitsplit.data.encoding import IGNORE_INDEX


@dataclass
class SupervisedCollator:
    """``input_ids``/``labels``/``attention_mask`` [B, T]; ``pixel_values`` [N_img, 3, H, W] if any image.

    Each sample brings its own number of images (``pixel_values`` [n_img, 3, H, W]; none when text-only),
    so ``N_img`` is the batch's total, in sample order and, within a sample, in tag order: transformers'
    Llava fills the ``<image>`` token runs of ``input_ids`` (row-major) with the images in that order.
    """

    pad_token_id: int

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)  # [B, T]
        labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)  # [B, T]
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)  # [B, T]
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            input_ids[row, :n] = item["input_ids"]
            labels[row, :n] = item["labels"]
            attention_mask[row, :n] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        images = [item["pixel_values"] for item in items if "pixel_values" in item]
        if images:
            batch["pixel_values"] = torch.cat(images)  # [N_img, 3, H, W]
        return batch

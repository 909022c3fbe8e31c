"""Tokenize a rendered conversation once and label exactly the tokens inside its target spans.

Each ``<image>`` tag is expanded to the number of image tokens the connector emits, the whole text is
tokenized in one call with character offsets, and a token is a target when its character span overlaps
a target span. The input ids are therefore exactly what the tokenizer produces for the full prompt
(LLaVA's per-round length arithmetic breaks on tokenizer quirks and then silently masks whole samples).

Truncation to ``max_length`` keeps the head of the sequence; a cut through an image's tokens or a cut
that leaves no target token is a ``DataProblem`` (the sample is skipped and counted, never trained on
with all labels masked).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llava_vitsplit.data.records import IMAGE_TAG, DataProblem
from llava_vitsplit.data.templates import Rendered

IGNORE_INDEX = -100


@dataclass
class Encoded:
    input_ids: torch.Tensor  # [T] long
    labels: torch.Tensor  # [T] long, IGNORE_INDEX where not a target


def expand_image_tags(rendered: Rendered, num_image_tokens: int) -> Rendered:
    """Replace every ``<image>`` by ``num_image_tokens`` copies, shifting the target spans to match."""
    if IMAGE_TAG not in rendered.text or num_image_tokens == 1:
        return rendered
    extra = (num_image_tokens - 1) * len(IMAGE_TAG)
    tag_starts = []
    pos = rendered.text.find(IMAGE_TAG)
    while pos >= 0:
        tag_starts.append(pos)
        pos = rendered.text.find(IMAGE_TAG, pos + len(IMAGE_TAG))

    def shift(index: int) -> int:
        return index + extra * sum(1 for s in tag_starts if s < index)

    text = rendered.text.replace(IMAGE_TAG, IMAGE_TAG * num_image_tokens)
    targets = [(shift(a), shift(b)) for a, b in rendered.targets]
    return Rendered(text, targets, rendered.add_special_tokens)


def encode(
    rendered: Rendered,
    tokenizer,
    *,
    image_token_id: int,
    num_image_tokens: int,
    max_length: int | None,
    sample_id: str = "?",
) -> Encoded:
    num_images = rendered.text.count(IMAGE_TAG)
    expanded = expand_image_tags(rendered, num_image_tokens)
    enc = tokenizer(
        expanded.text,
        add_special_tokens=expanded.add_special_tokens,
        return_offsets_mapping=True,
        truncation=False,
    )
    ids = list(enc["input_ids"])
    is_image = [i == image_token_id for i in ids]
    if sum(is_image) != num_images * num_image_tokens:
        raise ValueError(
            f"sample {sample_id!r}: the tokenizer produced {sum(is_image)} image tokens for {num_images} "
            f"{IMAGE_TAG} tag(s) x {num_image_tokens}; add {IMAGE_TAG} to the tokenizer as one special token"
        )
    labels = []
    for token_id, (start, end), image in zip(ids, enc["offset_mapping"], is_image, strict=True):
        target = (not image) and end > start and any(start < b and end > a for a, b in expanded.targets)
        labels.append(token_id if target else IGNORE_INDEX)

    if max_length is not None and len(ids) > max_length:
        # An image whose tokens do not all fit cannot be fed in part: the sample does not fit.
        if any(is_image[max_length:]):
            where = "cut through" if is_image[max_length - 1] else "drop"
            raise DataProblem(
                sample_id,
                "image_truncated",
                f"{len(ids)} tokens; model_max_length={max_length} would {where} the image tokens",
            )
        ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        why = (
            f"after truncation to {max_length} tokens"
            if max_length and len(enc["input_ids"]) > max_length
            else ""
        )
        raise DataProblem(sample_id, "no_target_tokens", f"no target token left {why}".strip())
    return Encoded(torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long))

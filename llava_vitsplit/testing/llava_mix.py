"""Generated data shaped like ``llava_v1_5_mix665k.json``, and the record list the dataset held before its index.

``write_llava_mix`` streams ``num_records`` records to a ``.json`` list (or ``.jsonl``): 1 in 16 text-only
(ShareGPT-like ids, no ``image``), the others with a COCO/GQA/OCR-VQA/TextVQA/VG-style image path, 1 to 8
question/answer pairs, replies long enough to reach ``target_bytes`` when given, and a few records that
are bad on purpose (no conversations, an ``<image>`` tag without an image, non-alternating turns) so the
skip accounting is exercised. Image paths cycle over ``num_distinct_images`` names per folder;
``write_mix_images`` writes those files.

``eager_records`` is the loading the dataset did before the record index (every record parsed into a
Python list): tests compare the indexed dataset against it and ``bench/record_index.py`` measures it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from llava_vitsplit.data.records import DataProblem, Sample, load_located_records, parse_record

IMAGE_FOLDERS = ("coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images", "vg/VG_100K")
WORDS = "the a picture shows of in on with is what colour where how many people there left right".split()
BASE_REPLY_WORDS = 12


def _record(rng: random.Random, number: int, reply_words: int, num_distinct_images: int) -> dict:
    pairs = rng.randint(1, 8)
    text_only = number % 16 == 15
    turns = []
    for pair in range(pairs):
        question = " ".join(rng.choices(WORDS, k=rng.randint(4, 14))) + "?"
        if pair == 0 and not text_only:
            question = "<image>\n" + question if rng.random() < 0.5 else question + "\n<image>"
        reply = " ".join(rng.choices(WORDS, k=rng.randint(1, 2 * reply_words)))
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": reply}]
    record = {"id": f"{number:09d}", "conversations": turns}
    if number % 5003 == 7:  # bad on purpose, three kinds in turn
        bad = (
            {**record, "conversations": turns + [{"from": "gpt", "value": "x"}]},  # turns out of order
            {"id": record["id"]},  # no conversations
            {"id": record["id"], "conversations": [{"from": "human", "value": "<image>\nq"}, turns[1]]},
        )
        return bad[number % 3]  # the last: an <image> tag without an image
    if text_only:
        return {"id": f"sg{number:07d}_0", "model": "", **record}
    folder = IMAGE_FOLDERS[number % len(IMAGE_FOLDERS)]
    return {**record, "image": f"{folder}/{number % num_distinct_images:012d}.jpg"}


def write_llava_mix(
    path: str | Path,
    num_records: int,
    *,
    seed: int = 0,
    target_bytes: int | None = None,
    num_distinct_images: int = 16,
) -> Path:
    """Write the generated set to ``path`` (``.json``: one list; ``.jsonl``: one record a line)."""
    path = Path(path)
    reply_words = BASE_REPLY_WORDS
    if target_bytes:  # a mean record: ~600 bytes + 4.5 pairs x a reply of ~reply_words words of ~4.6 bytes
        reply_words = max(1, round((target_bytes / num_records - 600) / (4.5 * 4.6)))
    rng = random.Random(seed)
    jsonl = path.suffix == ".jsonl"
    with open(path, "w", encoding="utf-8") as out:
        out.write("" if jsonl else "[\n")
        for number in range(num_records):
            text = json.dumps(_record(rng, number, reply_words, num_distinct_images))
            last = number == num_records - 1
            out.write(text + "\n" if jsonl else text + ("\n" if last else ",\n"))
        out.write("" if jsonl else "]\n")
    return path


def write_mix_images(image_folder: str | Path, num_distinct_images: int = 16) -> None:
    """The image files the generated records name (small JPEGs)."""
    for folder in IMAGE_FOLDERS:
        target = Path(image_folder) / folder
        target.mkdir(parents=True, exist_ok=True)
        for k in range(num_distinct_images):
            Image.new("RGB", (48 + k, 40), (k * 13 % 256, 90, 200)).save(target / f"{k:012d}.jpg")


@dataclass
class EagerRecords:
    """Every usable record parsed, with its place, and ``(place, problem)`` for every bad one."""

    samples: list[Sample] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    bad: list[tuple[str, DataProblem]] = field(default_factory=list)
    num_text_only_dropped: int = 0

    @property
    def bad_records(self) -> list[str]:
        return [f"{where}: {problem}" for where, problem in self.bad]

    def images_only(self) -> EagerRecords:
        """Stage 1's view: the text-only samples left out (and counted)."""
        kept = [i for i, s in enumerate(self.samples) if s.images]
        return EagerRecords(
            [self.samples[i] for i in kept],
            [self.places[i] for i in kept],
            self.bad,
            len(self.samples) - len(kept),
        )

    def modality_lengths(self, num_image_tokens: int) -> list[int]:
        return [
            s.num_words + num_image_tokens * len(s.images) if s.images else -max(1, s.num_words)
            for s in self.samples
        ]


def eager_records(paths: list[str | Path], require_image: bool = False) -> EagerRecords:
    """What ``LazySupervisedDataset`` built before the record index: all records as Python objects."""
    loaded = EagerRecords()
    for path in paths:
        for i, (where, record) in enumerate(load_located_records(path)):
            try:
                loaded.samples.append(parse_record(record, i))
                loaded.places.append(where)
            except DataProblem as problem:
                loaded.bad.append((where, problem))
    return loaded.images_only() if require_image else loaded

"""Lazy supervised dataset over LLaVA JSON/JSONL records and an image folder.

Records are parsed when the dataset is built (cheap: no images, no tokenizer) so malformed ones are
reported up front and the sampler knows every sample's modality and approximate length. Images are
decoded and text tokenized only in ``__getitem__``.

Bad samples never crash a run: a ``DataProblem`` (missing/corrupt image, ``<image>`` without an image,
no target left after truncation, ...) is logged once with the sample id, counted in ``problems``, and
the next usable sample is returned instead (a deterministic substitute, so the data order of a resumed
run is the same); skips are counted per record place (``file:line``), never merged by record id.
``strict=True`` instead checks every sample before training (in parallel, with a progress bar) and
raises with the full list of bad records. ``llava-vitsplit validate-data`` reports all
problems before a run. ``require_image=True`` (stage 1, where only the connector trains) leaves
text-only samples out, since a batch of them would carry no gradient.

A record may hold several images (``records.py``); ``max_images_per_sample`` skips (and counts, as
``too_many_images``) the records with more, like any other bad record.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from llava_vitsplit.data.encoding import encode
from llava_vitsplit.data.images import load_image
from llava_vitsplit.data.records import IMAGE_TAG, DataProblem, Sample, load_located_records, parse_record
from llava_vitsplit.data.templates import Template, get_template

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_BAD = 64


def count_image_tokens(processor) -> int:
    """How many tokens one ``<image>`` becomes, asked of the processor itself on a blank image."""
    tokenizer = processor.tokenizer
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TAG)
    blank = Image.new("RGB", (64, 64))
    ids = processor(images=[blank], text=[IMAGE_TAG], return_tensors="pt")["input_ids"]  # [1, T]
    count = int((ids == image_token_id).sum())
    if count < 1:
        raise ValueError(f"the processor produced no {IMAGE_TAG} tokens; is {IMAGE_TAG} in its tokenizer?")
    return count


def check_image_folder(image_folder: str | Path | None) -> None:
    """One clear error for a missing ``IMAGE_FOLDER`` (instead of one missing image per sample)."""
    if image_folder and not Path(image_folder).is_dir():
        raise FileNotFoundError(
            f"IMAGE_FOLDER {image_folder} does not exist or is not a folder "
            "(the data's image paths are relative to it)"
        )


class LazySupervisedDataset(Dataset):
    """Items: ``input_ids`` [T], ``labels`` [T] and, for image samples, ``pixel_values`` [n_img, 3, H, W]."""

    def __init__(
        self,
        data_path: str | Path | Sequence[str | Path],
        processor,
        *,
        image_folder: str | Path | None = None,
        template: str | Template = "vicuna_v1",
        model_max_length: int | None = 2048,
        strict: bool = False,
        require_image: bool = False,
        max_images_per_sample: int | None = None,
    ) -> None:
        paths = [data_path] if isinstance(data_path, str | Path) else list(data_path)
        check_image_folder(image_folder)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_folder = Path(image_folder) if image_folder else None
        self.template = get_template(template) if isinstance(template, str) else template
        self.model_max_length = model_max_length
        self.strict = strict
        if max_images_per_sample is not None and max_images_per_sample < 1:
            raise ValueError(f"max_images_per_sample must be >= 1, got {max_images_per_sample}")
        self.max_images_per_sample = max_images_per_sample
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TAG)
        self.num_image_tokens = count_image_tokens(processor)
        self.problems: Counter[str] = Counter()
        self._reported: set[str] = set()  # places (file:line) already counted

        self.samples: list[Sample] = []
        self.places: list[str] = []  # where each sample comes from, "file:line" or "file record N"
        bad_records: list[str] = []
        for path in paths:
            for i, (where, record) in enumerate(load_located_records(path)):
                try:
                    self.samples.append(parse_record(record, i, max_images_per_sample))
                    self.places.append(where)
                except DataProblem as problem:
                    bad_records.append(f"{where}: {problem}")
                    self._report(problem, where)
        self.num_text_only_dropped = 0
        if require_image:  # stage 1 trains only the connector: a text-only batch would have no gradient
            kept = [i for i, s in enumerate(self.samples) if s.images]
            self.num_text_only_dropped = len(self.samples) - len(kept)
            self.samples = [self.samples[i] for i in kept]
            self.places = [self.places[i] for i in kept]
            if self.num_text_only_dropped:
                logger.info(
                    "left out %d text-only samples (nothing to train in the connector)",
                    self.num_text_only_dropped,
                )
        if strict:
            self.check_all(bad_records)
        if not self.samples:
            raise ValueError(
                f"no usable samples in {[str(p) for p in paths]} (problems: {dict(self.problems)})"
            )
        logger.info("loaded %d samples from %s", len(self.samples), [str(p) for p in paths])

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def modality_lengths(self) -> list[int]:
        """Approximate token lengths, positive for image samples and negative for text-only ones."""
        return [
            s.num_words + self.num_image_tokens * len(s.images) if s.images else -max(1, s.num_words)
            for s in self.samples
        ]

    def _report(self, problem: DataProblem, where: str) -> None:
        """Count a skipped record once per place (records may share an id, or have none)."""
        if where not in self._reported:
            self._reported.add(where)
            self.problems[problem.kind] += 1
            logger.warning("skipping %s: %s", where, problem)

    def check_all(self, bad_records: list[str], workers: int = 8) -> None:
        """``strict``: build every sample (image decoded, text tokenized) before training, in parallel
        with a progress bar; raise ``ValueError`` listing every bad record with its place."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        def problem_of(index: int) -> str | None:
            try:
                self.build(index)
            except DataProblem as problem:
                return f"{self.places[index]}: {problem}"
            return None

        with ThreadPoolExecutor(max_workers=workers) as pool:
            found = list(
                tqdm(
                    pool.map(problem_of, range(len(self.samples))),
                    total=len(self.samples),
                    desc="checking data",
                )
            )
        bad = bad_records + [p for p in found if p is not None]
        if bad:
            raise ValueError(f"--strict_data: {len(bad)} bad record(s), nothing trained:\n" + "\n".join(bad))

    def image_path(self, image: str) -> Path:
        return self.image_folder / image if self.image_folder else Path(image)

    def pixel_values(self, image: Image.Image) -> torch.Tensor:
        """[3, H, W]: the processor's aspect-ratio handling (``pad``/``resize``), then its image processor."""
        prepare = getattr(self.processor, "prepare_images", None)
        if prepare is not None:
            image = prepare(image)
        return self.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]

    def build(self, index: int) -> dict[str, torch.Tensor]:
        """The item for sample ``index``; raises ``DataProblem`` when it cannot be used."""
        sample = self.samples[index]
        item = {}
        if sample.images:
            item["pixel_values"] = torch.stack(  # [n_img, 3, H, W], in tag order
                [self.pixel_values(load_image(self.image_path(image), sample.id)) for image in sample.images]
            )
        rendered = self.template.render(sample, self.tokenizer)
        encoded = encode(
            rendered,
            self.tokenizer,
            image_token_id=self.image_token_id,
            num_image_tokens=self.num_image_tokens,
            max_length=self.model_max_length,
            sample_id=sample.id,
        )
        item["input_ids"], item["labels"] = encoded.input_ids, encoded.labels
        item["sample_id"] = sample.id  # named in training logs (e.g. a non-finite step's samples)
        return item

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        for attempt in range(min(MAX_CONSECUTIVE_BAD, len(self))):
            try:
                return self.build((index + attempt) % len(self))
            except DataProblem as problem:
                self._report(problem, self.places[(index + attempt) % len(self)])
        raise RuntimeError(
            f"{MAX_CONSECUTIVE_BAD} consecutive samples from index {index} are unusable "
            f"(problems so far: {dict(self.problems)}); run `llava-vitsplit validate-data`"
        )


def describe_problems(problems: Counter[str]) -> str:
    return ", ".join(f"{kind}={n}" for kind, n in sorted(problems.items())) or "none"


__all__ = ["LazySupervisedDataset", "check_image_folder", "count_image_tokens", "describe_problems"]

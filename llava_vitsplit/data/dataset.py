"""Lazy supervised dataset over LLaVA JSON/JSONL records and an image folder.

Each data file is parsed once, on its first use, into an on-disk index (``record_index.py``: offsets,
modality, word count, image count, usable or not), so malformed records are reported up front and the
sampler knows every sample's modality and approximate length, while no process holds the records: a
sample is read from the file, parsed, its image decoded and its text tokenized in ``__getitem__``.
``DATA_PATH`` may be a mixture of sources (``mixture.py``), each with its own image folder, template
and share; ``mixture`` lists the realised count of each.

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

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from llava_vitsplit.data.encoding import encode
from llava_vitsplit.data.images import load_image
from llava_vitsplit.data.mixture import DataSource, check_image_folder, draw, resolve_sources
from llava_vitsplit.data.record_index import RecordIndex, open_index
from llava_vitsplit.data.records import IMAGE_TAG, DataProblem, Sample, parse_record
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


class LazySupervisedDataset(Dataset):
    """Items: ``input_ids`` [T], ``labels`` [T] and, for image samples, ``pixel_values`` [n_img, 3, H, W].

    ``data_path``: data file(s), a mixture file (``mixture.py``) or a list of ``DataSource``. Each file
    is read through its on-disk index (``record_index.py``); a sample is parsed when it is fetched.
    """

    def __init__(
        self,
        data_path: str | Path | Sequence[str | Path] | Sequence[DataSource],
        processor,
        *,
        image_folder: str | Path | None = None,
        template: str | Template = "auto",
        model_max_length: int | None = 2048,
        strict: bool = False,
        require_image: bool = False,
        seed: int = 0,
        max_images_per_sample: int | None = None,
    ) -> None:
        given = [data_path] if isinstance(data_path, str | Path) else list(data_path)
        if given and all(isinstance(s, DataSource) for s in given):
            self.sources = given
        else:
            self.sources = resolve_sources(given, image_folder)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_folder = Path(image_folder) if image_folder else None
        family = getattr(processor, "llm_family", None)  # what ``auto`` means: the LLM's own format
        default = get_template(template, family) if isinstance(template, str) else template
        self.templates = [get_template(s.template, family) if s.template else default for s in self.sources]
        self.template = default
        self.model_max_length = model_max_length
        self.strict = strict
        if max_images_per_sample is not None and max_images_per_sample < 1:
            raise ValueError(f"max_images_per_sample must be >= 1, got {max_images_per_sample}")
        self.max_images_per_sample = max_images_per_sample
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TAG)
        self.num_image_tokens = count_image_tokens(processor)
        self.problems: Counter[str] = Counter()
        self._reported: set[str] = set()  # places (file:line) already counted
        self.mixture: list[dict] = []  # per source: files, amount, usable records, samples drawn

        self.files: list[RecordIndex] = []
        self.file_source: list[int] = []  # source number of each file
        bad_records: list[str] = []
        self.num_text_only_dropped = 0
        picked = [self._draw_source(n, seed, require_image, bad_records) for n in range(len(self.sources))]
        self._file = np.concatenate([f for f, _ in picked]).astype(np.int32)  # [N] file of each sample
        self._row = np.concatenate([r for _, r in picked]).astype(np.int64)  # [N] its row in that file
        if self.num_text_only_dropped:
            logger.info(
                "left out %d text-only samples (nothing to train in the connector)",
                self.num_text_only_dropped,
            )
        if strict:
            self.check_all(bad_records)
        names = [str(f.path) for f in self.files]
        if not len(self):
            raise ValueError(f"no usable samples in {names} (problems: {dict(self.problems)})")
        logger.info("loaded %d samples from %s", len(self), names)

    def _draw_source(
        self, number: int, seed: int, require_image: bool, bad_records: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Index the source's files, report their bad records, draw its share: (file numbers, rows)."""
        source, files, rows = self.sources[number], [], []
        for path in source.files:
            index = open_index(path)
            self.files.append(index)
            self.file_source.append(number)
            usable = index.rows["usable"] == 1
            for row in np.flatnonzero(~usable).tolist():
                self._report_bad_record(index, row, bad_records)
            kept = usable & (index.rows["num_images"] > 0) if require_image else usable
            self.num_text_only_dropped += int(usable.sum() - kept.sum())
            if self.max_images_per_sample is not None:  # reported as too_many_images, like a bad record
                over = kept & (index.rows["num_images"] > self.max_images_per_sample)
                for row in np.flatnonzero(over).tolist():
                    self._report_bad_record(index, row, bad_records)
                kept &= ~over
            rows.append(np.flatnonzero(kept))
            files.append(np.full(len(rows[-1]), len(self.files) - 1))
        files_of, rows_of = np.concatenate(files), np.concatenate(rows)
        chosen = draw(source, len(rows_of), seed)
        self.mixture.append(
            {
                "name": source.name,
                "files": [str(p) for p in source.files],
                "image_folder": str(source.image_folder) if source.image_folder else None,
                "template": source.template,
                "amount": source.amount(),
                "usable": len(rows_of),
                "samples": len(chosen),
            }
        )
        return files_of[chosen], rows_of[chosen]

    def _report_bad_record(self, index: RecordIndex, row: int, bad_records: list[str]) -> None:
        """Re-parse a record the index marked unusable, to report its problem with its place."""
        try:
            parse_record(index.record(row), row, self.max_images_per_sample)
        except DataProblem as problem:
            where = index.place(row)
            bad_records.append(f"{where}: {problem}")
            self._report(problem, where)

    def __len__(self) -> int:
        return len(self._row)

    def sample(self, index: int) -> Sample:
        """Sample ``index``, read from its file and parsed now."""
        row = int(self._row[index])
        return parse_record(self.files[self._file[index]].record(row), row, self.max_images_per_sample)

    def place(self, index: int) -> str:
        return self.files[self._file[index]].place(int(self._row[index]))

    def source_number(self, index: int) -> int:
        return self.file_source[self._file[index]]

    @property
    def modality_lengths(self) -> list[int]:
        """Approximate token lengths, positive for image samples and negative for text-only ones."""
        words = np.zeros(len(self), dtype=np.int64)
        images = np.zeros(len(self), dtype=np.int64)
        for number, index in enumerate(self.files):
            mine = self._file == number
            words[mine] = index.rows["num_words"][self._row[mine]]
            images[mine] = index.rows["num_images"][self._row[mine]]
        return np.where(images > 0, words + self.num_image_tokens * images, -np.maximum(1, words)).tolist()

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
                return f"{self.place(index)}: {problem}"
            return None

        keys = self._file.astype(np.int64) * (1 << 40) + self._row  # a repeated record is checked once
        distinct = np.sort(np.unique(keys, return_index=True)[1]).tolist()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found = list(
                tqdm(
                    pool.map(problem_of, distinct),
                    total=len(distinct),
                    desc="checking data",
                )
            )
        bad = bad_records + [p for p in found if p is not None]
        if bad:
            raise ValueError(f"--strict_data: {len(bad)} bad record(s), nothing trained:\n" + "\n".join(bad))

    @staticmethod
    def image_path(image: str, folder: Path | None) -> Path:
        return folder / image if folder else Path(image)

    def pixel_values(self, image: Image.Image) -> torch.Tensor:
        """[3, H, W]: the processor's aspect-ratio handling (``pad``/``resize``), then its image processor."""
        prepare = getattr(self.processor, "prepare_images", None)
        if prepare is not None:
            image = prepare(image)
        return self.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]

    def build(self, index: int) -> dict[str, torch.Tensor]:
        """The item for sample ``index``; raises ``DataProblem`` when it cannot be used."""
        sample, source = self.sample(index), self.source_number(index)
        item = {}
        if sample.images:
            folder = self.sources[source].image_folder
            item["pixel_values"] = torch.stack(  # [n_img, 3, H, W], in tag order
                [
                    self.pixel_values(load_image(self.image_path(image, folder), sample.id))
                    for image in sample.images
                ]
            )
        rendered = self.templates[source].render(sample, self.tokenizer)
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
                self._report(problem, self.place((index + attempt) % len(self)))
        raise RuntimeError(
            f"{MAX_CONSECUTIVE_BAD} consecutive samples from index {index} are unusable "
            f"(problems so far: {dict(self.problems)}); run `llava-vitsplit validate-data`"
        )


def describe_problems(problems: Counter[str]) -> str:
    return ", ".join(f"{kind}={n}" for kind, n in sorted(problems.items())) or "none"


__all__ = ["LazySupervisedDataset", "check_image_folder", "count_image_tokens", "describe_problems"]

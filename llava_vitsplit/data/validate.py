"""``llava-vitsplit validate-data``: report every problem in a training set before a run starts.

Checks every record's structure, decodes every image fully, and (given the tokenizer and vision tower,
or a processor) renders and tokenizes every sample with the chosen template and ``model_max_length``.
Prints one line per problem (sample id, kind, detail) and a summary; exits 1 when anything is wrong.
``--data_path mix.yaml`` checks every record of every source of a mixture with the source's image folder
and template (all records, not the training draw); a problem in the mixture file itself exits 1 too.

    llava-vitsplit validate-data --data_path train.json --image_folder images/ \\
        --model_name_or_path lmsys/vicuna-7b-v1.5 --vision_tower openai/clip-vit-large-patch14-336 \\
        --conv_template auto --model_max_length 2048
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from llava_vitsplit.data.encoding import encode
from llava_vitsplit.data.images import load_image
from llava_vitsplit.data.mixture import DataSource, is_mixture, load_mixture
from llava_vitsplit.data.records import IMAGE_TAG, DataProblem, load_records, parse_record
from llava_vitsplit.data.templates import get_template, template_names


@dataclass
class ValidationReport:
    num_records: int = 0
    num_images: int = 0
    num_text_only: int = 0
    problems: list[DataProblem] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        return Counter(p.kind for p in self.problems)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "num_records": self.num_records,
            "num_usable": self.num_records - sum(p.kind != "bad_file" for p in self.problems),
            "num_images": self.num_images,
            "num_text_only": self.num_text_only,
            "problem_counts": dict(sorted(self.counts.items())),
            "problems": [{"id": p.record_id, "kind": p.kind, "detail": p.detail} for p in self.problems],
        }


def validate_data(
    data_paths: list[str | Path],
    image_folder: str | Path | None = None,
    processor=None,
    template: str = "auto",
    model_max_length: int | None = None,
    max_images_per_sample: int | None = None,
) -> ValidationReport:
    """Check every record (and, with a processor, its tokenization); never raises on a bad sample.

    ``data_paths`` may be one mixture file: every record of every source is checked, with the source's
    image folder and template (a problem in the mixture file itself raises ``ValueError``).
    """
    report = ValidationReport()
    tokens = (None, None)
    family = getattr(processor, "llm_family", None)  # what ``auto`` means: the LLM's own format
    if processor is not None:
        from llava_vitsplit.data.dataset import count_image_tokens

        tokens = (processor.tokenizer.convert_tokens_to_ids(IMAGE_TAG), count_image_tokens(processor))
    if len(data_paths) == 1 and is_mixture(data_paths[0]):
        sources = load_mixture(data_paths[0], image_folder)
    else:
        sources = [
            DataSource("data", tuple(Path(p) for p in data_paths), image_folder and Path(image_folder))
        ]
    for source in sources:
        template_obj = get_template(source.template or template, family) if processor is not None else None
        for path in source.files:
            limits = (model_max_length, max_images_per_sample)
            _check_file(report, path, source.image_folder, template_obj, processor, tokens, limits)
    return report


def _check_file(report, path, folder, template_obj, processor, tokens, limits) -> None:
    """Add one data file's records and problems to ``report``; ``tokens``: (image token id, count),
    ``limits``: (model_max_length, max_images_per_sample)."""
    model_max_length, max_images = limits
    try:
        records = load_records(path)
    except (ValueError, OSError) as err:  # a whole-file problem is a finding; the other files go on
        report.problems.append(DataProblem(str(path), "bad_file", str(err)))
        return
    for index, record in enumerate(records):
        report.num_records += 1
        try:
            sample = parse_record(record, index, max_images)
            if sample.images:
                report.num_images += 1
                for image in sample.images:
                    load_image(folder / image if folder else Path(image), sample.id)
            else:
                report.num_text_only += 1
            if processor is not None:
                encode(
                    template_obj.render(sample, processor.tokenizer),
                    processor.tokenizer,
                    image_token_id=tokens[0],
                    num_image_tokens=tokens[1],
                    max_length=model_max_length,
                    sample_id=sample.id,
                )
        except DataProblem as problem:
            report.problems.append(problem)


def _load_processor(args):
    if args.processor:
        from transformers import AutoProcessor

        import llava_vitsplit  # noqa: F401  (registers the llava_vitsplit processor)

        return AutoProcessor.from_pretrained(args.processor)
    if args.model_name_or_path and args.vision_tower:
        from llava_vitsplit.model.parts import processor_from_parts

        return processor_from_parts(
            args.vision_tower, args.model_name_or_path, image_aspect_ratio=args.image_aspect_ratio
        )
    if args.model_name_or_path or args.vision_tower:
        raise SystemExit("validate-data: give both --model_name_or_path and --vision_tower (or --processor)")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llava-vitsplit validate-data", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data_path", nargs="+", required=True, help="LLaVA .json / .jsonl file(s), or one mixture file"
    )
    parser.add_argument(
        "--image_folder", default=None, help="folder the records' 'image' paths are relative to"
    )
    parser.add_argument(
        "--model_name_or_path", default=None, help="LLM (for its tokenizer); enables token checks"
    )
    parser.add_argument("--vision_tower", default=None, help="vision tower (for its image processor)")
    parser.add_argument(
        "--processor", default=None, help="a saved llava_vitsplit checkpoint/processor instead"
    )
    parser.add_argument(
        "--conv_template",
        "--version",  # LLaVA's name for it
        dest="conv_template",
        default="auto",
        choices=template_names(),
        help="conversation template (auto: the LLM's); --version is an alias",
    )
    parser.add_argument("--model_max_length", type=int, default=2048)
    parser.add_argument(
        "--max_images_per_sample",
        type=int,
        default=None,
        help="report records with more images than this (as training with the same option skips them)",
    )
    parser.add_argument("--image_aspect_ratio", default="pad", choices=["pad", "resize"])
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)

    try:
        report = validate_data(
            args.data_path,
            args.image_folder,
            _load_processor(args),
            args.conv_template,
            args.model_max_length,
            args.max_images_per_sample,
        )
    except (ValueError, FileNotFoundError) as err:  # the mixture file itself is wrong
        print(err)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for problem in report.problems:
            print(f"{problem.record_id}\t{problem.kind}\t{problem.detail}")
        summary = report.to_dict()
        print(
            f"{summary['num_records']} records ({summary['num_images']} with image, "
            f"{summary['num_text_only']} text-only): {summary['num_usable']} usable, "
            f"{len(report.problems)} with problems {summary['problem_counts'] or ''}".rstrip()
        )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

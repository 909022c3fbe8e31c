"""``llava-vitsplit dense-validate``: list every problem of a dense dataset split before training on it.

Every image and label (or depth map, or COCO image) is opened once, in parallel with a progress bar; one
line per problem names its file. Exits 1 when anything is wrong. ``dense-train`` runs the same check
(cached) before step 1.

    llava-vitsplit dense-validate --preset dense-ade20k-s --data-root data/ADEChallengeData2016 --split train
"""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llava-vitsplit dense-validate", description=__doc__.splitlines()[0])
    p.add_argument("--preset", required=True, help="preset name or a preset JSON file")
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", action="append", help="split to check (repeat; default: train)")
    p.add_argument("--layout", help="override the preset's dataset layout")
    p.add_argument("--workers", type=int, help="parallel readers (default: min(8, CPUs))")
    p.add_argument("--json", help="also write the report(s) to this JSON file")
    args = p.parse_args(argv)

    from llava_vitsplit.dense.presets import load_preset
    from llava_vitsplit.dense.validate import validate_split
    from llava_vitsplit.util.atomic import write_json

    preset = load_preset(args.preset)
    reports = [
        validate_split(preset, args.data_root, split, args.layout, args.workers)
        for split in args.split or ["train"]
    ]
    for report in reports:
        for problem in report.problems:
            print(problem.line())
    for report in reports:
        print(report.summary())
    if args.json:
        write_json(args.json, [report.to_dict() for report in reports])
    return 0 if all(report.ok for report in reports) else 1

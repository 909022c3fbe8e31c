"""``llava-vitsplit quickstart``: run (or resume) the offline quickstart and print its report.

Examples::

    llava-vitsplit quickstart                                  # the default budget (~16 min on 2 cores)
    llava-vitsplit quickstart --compare                        # + MLP projector and blind baseline
    llava-vitsplit quickstart --budget smoke --out /tmp/qs     # every step on a handful of samples
    llava-vitsplit quickstart --vision-tower facebook/dinov2-small \\
        --language-model HuggingFaceTB/SmolLM2-135M-Instruct   # same architecture from a model hub
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava_vitsplit.quickstart.budget import BUDGETS, VARIANTS, Budget, get_budget
from llava_vitsplit.quickstart.easy_vqa_task import PARQUET_NAME, TASK_NAME
from llava_vitsplit.quickstart.pipeline import QuickstartError, Run
from llava_vitsplit.quickstart.report import (
    comparison_table,
    format_report,
    read_eval,
    test_docs,
    trainable_parameters,
)

DEFAULT_OUT = Path("checkpoints/quickstart")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-vitsplit quickstart", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="run folder (default: %(default)s)")
    parser.add_argument("--budget", default="default", choices=list(BUDGETS))
    parser.add_argument("--variant", default="vitsplit", choices=list(VARIANTS))
    parser.add_argument(
        "--compare", action="store_true", help="also run the mlp and blind variants, print a table"
    )
    parser.add_argument("--vision-tower", default="playground/models/dinov2-small", help="folder or hub id")
    parser.add_argument(
        "--language-model", default="playground/models/smollm2-135m-instruct", help="folder or hub id"
    )
    parser.add_argument("--data-dir", default="playground/data/easy_vqa", help="converted easy-vqa folder")
    parser.add_argument("--models-root", default="playground/models", help="where `assets` writes")
    parser.add_argument(
        "--repo",
        default=".",
        help="the llava-vitsplit checkout whose scripts/ train (default: current folder)",
    )
    parser.add_argument("--force", action="store_true", help="redo every step")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per step (default: all cores)")
    for name in ("pretrain_steps", "finetune_steps", "eval_limit", "image_size", "limit_images"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help="override the budget")
    parser.add_argument(
        "--balance-yes-no",
        action="store_true",
        help="stage 2: equal yes and no answers per yes/no phrasing (easy_vqa_source.balance_yes_no)",
    )
    for name in ("pretrain_lr", "finetune_lr", "connector_lr"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=float, default=None, help="override the budget"
        )
    return parser


def budget_from_args(args: argparse.Namespace) -> Budget:
    """The named budget with the command line's overrides."""
    return get_budget(
        args.budget,
        pretrain_steps=args.pretrain_steps,
        finetune_steps=args.finetune_steps,
        eval_limit=args.eval_limit,
        image_size=args.image_size,
        limit_images=args.limit_images,
        pretrain_lr=args.pretrain_lr,
        finetune_lr=args.finetune_lr,
        connector_lr=args.connector_lr,
        balanced_yes_no=True if args.balance_yes_no else None,
    )


def run_variant(args: argparse.Namespace, variant: str) -> Run:
    budget = budget_from_args(args)
    out = Path(args.out) if variant == "vitsplit" else Path(args.out) / f"compare-{variant}"
    run = Run(
        out_dir=out,
        budget=budget,
        repo=Path(args.repo),
        variant=variant,
        vision_tower=args.vision_tower,
        language_model=args.language_model,
        models_root=Path(args.models_root),
        data_dir=Path(args.data_dir),
        force=args.force,
        threads=args.threads,
    )
    run.run_all()
    return run


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    variants = ["vitsplit", "mlp", "blind"] if args.compare else [args.variant]
    rows = []
    try:
        for variant in variants:  # Run() checks --repo before any step
            run = run_variant(args, variant)
            result = read_eval(run.eval_dir, run.task_name())
            docs = test_docs(run.data_dir / "lmms_eval_tasks" / TASK_NAME / PARQUET_NAME)
            print(format_report(result, docs, run.checkpoint_dir, run.timings))
            seconds = sum(v for k, v in run.timings.items() if k in ("pretrain", "finetune", "evaluate"))
            rows.append((variant, result, trainable_parameters(run.checkpoint_dir), seconds))
    except QuickstartError as err:
        print(f"llava-vitsplit quickstart: FAILED: {err}", file=sys.stderr)
        return 1
    if len(rows) > 1:
        print("\n" + comparison_table(rows))
    return 0

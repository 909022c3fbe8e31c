"""``llava-vitsplit dense-train``: train a dense preset (segmentation, depth or detection) with accelerate.

Examples::

    llava-vitsplit dense-train --preset dense-ade20k-s --data-root data/ade/ADEChallengeData2016 \\
        --backbone-weights playground/models/dinov2-small --output-dir runs/ade-s
    accelerate launch -m llava_vitsplit.cli dense-train --preset dense-nyu-s ...   # several GPUs
"""

from __future__ import annotations

import argparse
import json

from llava_vitsplit.dense.commands import reports_data_errors
from llava_vitsplit.dense.param_report import dense_param_report
from llava_vitsplit.dense.presets import dense_presets, load_preset


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llava-vitsplit dense-train", description=__doc__.splitlines()[0])
    p.add_argument("--preset", help="preset name (see --list-presets) or a preset JSON file")
    p.add_argument(
        "--list-presets", action="store_true", help="print the presets with trainable parameters and exit"
    )
    p.add_argument("--data-root", help="dataset root in the preset's layout (or --layout)")
    p.add_argument("--output-dir", help="run folder: checkpoints/, log.jsonl, eval.json")
    p.add_argument(
        "--backbone-weights", help="local transformers checkpoint of the backbone (omit: random init)"
    )
    p.add_argument(
        "--layout", help="dataset layout: ade20k, cityscapes, pascal_context, folder, nyu, coco split names"
    )
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val", help="'' to skip evaluation")
    p.add_argument("--max-iters", type=int)
    p.add_argument("--batch-size", type=int, help="per-process batch size")
    p.add_argument("--lr", type=float)
    p.add_argument("--schedule", choices=["poly", "one_cycle"])
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--cpu", action="store_true", help="force CPU even when a GPU is present")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--eval-interval", type=int, default=0)
    p.add_argument("--max-eval-images", type=int)
    p.add_argument("--save-interval", type=int, default=1000)
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-resume", action="store_true", help="start fresh even if the run folder has checkpoints"
    )
    p.add_argument(
        "--skip-bad-samples",
        action="store_true",
        help="leave out the samples the data check finds bad (counted) instead of stopping before step 1",
    )
    return p


@reports_data_errors
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.list_presets:
        for name, preset in sorted(dense_presets().items()):
            total = dense_param_report(name)["total"]["trainable"]
            print(f"{name:<26} {preset.task:<13} {preset.backbone:<14} {total / 1e6:6.1f}M trainable")
        return 0
    missing = [
        flag
        for flag, value in (
            ("--preset", args.preset),
            ("--data-root", args.data_root),
            ("--output-dir", args.output_dir),
        )
        if not value
    ]
    if missing:
        parser().error(f"missing {', '.join(missing)}")
    from llava_vitsplit.dense.trainer import TrainArgs, train
    from llava_vitsplit.util.rank_failure import stopping_every_rank_on_failure

    preset = load_preset(args.preset)
    if args.schedule:
        preset = preset.replace(schedule=args.schedule)
    train_args = TrainArgs(
        preset=preset,
        data_root=args.data_root,
        output_dir=args.output_dir,
        backbone_weights=args.backbone_weights,
        layout=args.layout,
        train_split=args.train_split,
        val_split=args.val_split or None,
        max_iters=args.max_iters,
        batch_size=args.batch_size,
        lr=args.lr,
        num_workers=args.num_workers,
        mixed_precision=args.mixed_precision,
        cpu=args.cpu,
        eval_interval=args.eval_interval,
        max_eval_images=args.max_eval_images,
        save_interval=args.save_interval,
        keep_checkpoints=args.keep_checkpoints,
        log_interval=args.log_interval,
        seed=args.seed,
        resume=not args.no_resume,
        grad_clip=args.grad_clip,
        skip_bad_samples=args.skip_bad_samples,
    )
    result = stopping_every_rank_on_failure(lambda: train(train_args))
    if result:
        print(json.dumps({k: v for k, v in result.items() if k != "IoU"}))
    return 0

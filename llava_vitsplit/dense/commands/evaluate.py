"""``llava-vitsplit dense-eval``: evaluate a dense checkpoint (mIoU, depth errors or COCO AP) on a split.

The split is checked first (as ``dense-validate`` does); bad samples stop it with their list, or are
left out with ``--skip-bad-samples``.
"""

from __future__ import annotations

import argparse
import json

from llava_vitsplit.dense.commands import reports_data_errors


@reports_data_errors
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llava-vitsplit dense-eval", description=__doc__)
    p.add_argument(
        "--checkpoint", required=True, help="step-<N>/ checkpoint folder or a run folder (its latest)"
    )
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--layout", help="override the preset's dataset layout")
    p.add_argument("--backbone-weights", help="override the backbone weights path stored in the checkpoint")
    p.add_argument("--max-images", type=int)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--out", help="write the metrics JSON here too")
    p.add_argument("--skip-bad-samples", action="store_true", help="leave out bad samples (counted)")
    args = p.parse_args(argv)

    import torch

    from llava_vitsplit.dense.evaluation import evaluate_dense
    from llava_vitsplit.dense.loading import load_models
    from llava_vitsplit.dense.pipeline import build_dataset
    from llava_vitsplit.dense.validate import BadDataError, validate_split
    from llava_vitsplit.util.atomic import write_json

    device = torch.device(args.device)
    loaded = load_models([args.checkpoint], args.backbone_weights, device)
    preset, model = loaded.standalone[0] if loaded.standalone else (loaded.dense_presets[0], loaded.dense)
    report = validate_split(preset, args.data_root, args.split, args.layout)
    if not report.ok and not args.skip_bad_samples:
        raise BadDataError([report])
    skip = report.bad_samples
    normalization = loaded.normalization[preset.name]  # what training used
    dataset = build_dataset(preset, args.data_root, args.split, False, args.layout, skip, normalization)
    result = evaluate_dense(model, preset, dataset, device, args.max_images)
    result = {"preset": preset.name, "split": args.split, "skipped_samples": len(skip), **result}
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()

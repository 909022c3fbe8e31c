"""``llava-vitsplit dense-eval``: evaluate a dense checkpoint (mIoU, depth errors or COCO AP) on a split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llava-vitsplit dense-eval", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="step-<N>.pt file or a run folder (its latest)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--layout", help="override the preset's dataset layout")
    p.add_argument("--backbone-weights", help="override the backbone weights path stored in the checkpoint")
    p.add_argument("--max-images", type=int)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--out", help="write the metrics JSON here too")
    args = p.parse_args(argv)

    import torch

    from llava_vitsplit.dense.evaluation import evaluate_dense, evaluate_detection
    from llava_vitsplit.dense.loading import load_models
    from llava_vitsplit.dense.pipeline import build_dataset

    device = torch.device(args.device)
    loaded = load_models([args.checkpoint], args.backbone_weights, device)
    if loaded.detectors:
        preset, model = loaded.detectors[0]
        dataset = build_dataset(preset, args.data_root, args.split, train=False, layout=args.layout)
        result = evaluate_detection(model, dataset, device, args.max_images)
    else:
        preset = loaded.dense_presets[0]
        dataset = build_dataset(preset, args.data_root, args.split, train=False, layout=args.layout)
        result = evaluate_dense(loaded.dense, preset, dataset, device, args.max_images)
    result = {"preset": preset.name, "split": args.split, **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()

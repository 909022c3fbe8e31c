"""``llava-vitsplit dense-predict``: run one or more checkpoints on images and write PNGs.

Each task writes under ``<out>/<preset>/`` (``dense.tasks``): segmentation ``<image>.png`` palette masks
(pixel value = class id); depth ``<image>_depth.png`` (16-bit millimetres) and
``<image>_depth_colour.png``; detection ``<image>.png`` with boxes/masks drawn and ``<image>.json``.
Several segmentation/depth checkpoints on the same backbone share one frozen pass per image
(multi-task inference). A photo that cannot be read is skipped with a message naming it; the others
are written (exit status 1 then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava_vitsplit.dense.commands import reports_data_errors


@reports_data_errors
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llava-vitsplit dense-predict", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True, help="repeat for multi-task inference")
    p.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--out", required=True)
    p.add_argument("--backbone-weights")
    p.add_argument(
        "--score-threshold", type=float, default=0.5, help="detection: boxes drawn at or above this"
    )
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)

    import torch

    from llava_vitsplit.dense.data import BadSample, list_images, load_rgb
    from llava_vitsplit.dense.loading import load_models
    from llava_vitsplit.dense.tasks import PredictOptions

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loaded = load_models(args.checkpoint, args.backbone_weights, device)
    out = Path(args.out)
    images = list_images(args.images)
    options = PredictOptions(score_threshold=args.score_threshold)
    written, skipped = 0, 0
    with torch.no_grad():
        for path in images:
            try:
                rgb = load_rgb(path)
            except BadSample as exc:
                print(f"skipped: {exc}", file=sys.stderr)
                skipped += 1
                continue
            written += _predict_dense(loaded, rgb, path, out, device)
            written += _predict_standalone(loaded, rgb, path, out, device, options)
    read = len(images) - skipped
    print(
        f"wrote {written} prediction(s) for {read} image(s) under {out}; {skipped} unreadable image(s) skipped"
    )
    return 1 if skipped else 0


def _predict_dense(loaded, rgb, path: Path, out: Path, device) -> int:
    """Every branch (segmentation, depth) from one frozen pass; returns the predictions written."""
    from torchvision.transforms.v2 import functional as TF

    from llava_vitsplit.dense.inference import predict_resized
    from llava_vitsplit.dense.tasks import task_spec
    from llava_vitsplit.dense.transforms import eval_image_transform

    if loaded.dense is None:
        return 0
    image = TF.to_image(rgb)  # [3, H, W] uint8
    size = tuple(image.shape[-2:])
    # one preset's resize for all branches: they share one frozen pass
    first = loaded.dense_presets[0]
    transform = eval_image_transform(first.test_size, loaded.normalization[first.name])  # as trained
    pixels = transform(image)[None].to(device)  # [1, 3, h, w]
    slide = first.slide_stride is not None and all(p.slide_stride for p in loaded.dense_presets)
    crop = first.crop_size if slide else None
    stride = first.slide_stride if slide else None
    outputs = _multi_predict(loaded.dense, pixels, size, crop, stride, predict_resized)
    for preset in loaded.dense_presets:
        pred = outputs[preset.name][0]  # [K, H, W]
        task_spec(preset).branch.write(pred, preset, out / preset.name, path.stem)
    return len(loaded.dense_presets)


def _predict_standalone(loaded, rgb, path: Path, out: Path, device, options) -> int:
    """Every own-model task (detection: an overlay PNG and a JSON each); returns how many."""
    from llava_vitsplit.dense.tasks import task_spec

    for preset, model in loaded.standalone:
        task_spec(preset).own_model.predict(model, preset, rgb, out / preset.name, path.stem, device, options)
    return len(loaded.standalone)


def _multi_predict(model, pixels, size, crop, stride, predict_resized):
    """All branches at once: each window is one frozen pass feeding every branch."""
    import torch

    names = list(model.branches)
    widths: list[int] = []

    def joint(x):
        outs = model(x)  # {name: [B, K, h, w]}
        if not widths:
            widths.extend(outs[n].shape[1] for n in names)
        return torch.cat([outs[n].float() for n in names], dim=1)  # [B, sum K, h, w]

    stacked = predict_resized(joint, pixels, size, crop, stride)  # [B, sum K, H, W]
    return dict(zip(names, stacked.split(widths, dim=1), strict=True))

"""``llava-vitsplit cka``: linear CKA between all layers of a backbone on a folder of images.

Images are normalised as the backbone expects (``backbones.normalization``: the weights folder's
``preprocessor_config.json``, or the family's mean/std).

Writes ``cka.json`` (matrix, layer names) and ``cka.png`` (heatmap) into ``--out``: use it to pick K_t
(the low-CKA late blocks) and prior layers for a new backbone, as in the paper's Figure 3.
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llava-vitsplit cka", description=__doc__.splitlines()[0])
    p.add_argument(
        "--backbone",
        default="dinov2-small",
        help="embedded config name (dinov2-small ...) or a JSON file with a config dict",
    )
    p.add_argument("--backbone-weights", help="local transformers checkpoint (omit: random weights)")
    p.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=224, help="images are resized to size x size")
    p.add_argument("--max-images", type=int, default=64)
    p.add_argument("--tokens-per-image", type=int, default=256, help="random patch tokens kept per image")
    args = p.parse_args(argv)

    from pathlib import Path

    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    from llava_vitsplit.backbones.normalization import backbone_normalization
    from llava_vitsplit.dense.build import build_backbone
    from llava_vitsplit.dense.cka import layer_features, linear_cka_matrix, save_cka
    from llava_vitsplit.dense.data import list_images, load_rgb
    from llava_vitsplit.dense.transforms import normalise

    spec = args.backbone
    if spec.endswith(".json"):
        spec = json.loads(Path(spec).read_text())
    backbone = build_backbone(spec, args.backbone_weights)
    normalization = backbone_normalization(spec, args.backbone_weights)
    prep = v2.Compose([v2.Resize((args.size, args.size), antialias=True), *normalise(normalization)])
    paths = list_images(args.images)[: args.max_images]
    images = [prep(TF.to_image(load_rgb(p))) for p in paths]
    matrix = linear_cka_matrix(layer_features(backbone, images, args.tokens_per_image))
    json_path, png_path = save_cka(matrix, args.out, title=f"linear CKA, {len(images)} images")
    print(f"wrote {json_path} and {png_path} ({matrix.shape[0]} hidden states)")
    return 0

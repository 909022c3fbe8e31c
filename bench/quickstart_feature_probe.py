"""Do the quickstart's frozen DINOv2-S features carry easy-vqa's colour and shape? A linear-probe check.

For train/test images whose colour and shape the questions determine, the patch tokens of chosen hidden
states are averaged, standardised, and a ridge-regression classifier (closed form) is fitted on train and
scored on test. High accuracy means the information the questions ask about reaches the connector.

    .venv/bin/python bench/quickstart_feature_probe.py --tower playground/models/dinov2-small --image-size 84
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

from llava_vitsplit.quickstart import easy_vqa_source


def features(model, processor, split: str, limit: int, layers: list[int]):
    """Mean patch token per layer [N, C] and the colour/shape labels of fully known images."""
    data = easy_vqa_source.load_split(split, limit_images=limit)
    facts = easy_vqa_source.image_facts(data.questions, split)
    ids = [i for i in sorted(facts) if facts[i].color and facts[i].shape]
    feats: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(ids), 32):
        batch = ids[start : start + 32]
        images = [Image.open(data.image_paths[i]).convert("RGB") for i in batch]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]  # [B, 3, S, S]
        with torch.no_grad():
            hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states  # L+1 x [B, 1+N, C]
        for layer in layers:
            feats[layer].append(hidden[layer][:, 1:].mean(1))  # [B, C]
    arrays = {layer: torch.cat(v).numpy() for layer, v in feats.items()}
    return arrays, [facts[i].color for i in ids], [facts[i].shape for i in ids]


def ridge_probe(x_train, y_train, x_test, y_test, alpha: float = 10.0) -> float:
    classes = sorted(set(y_train))
    targets = np.eye(len(classes))[[classes.index(v) for v in y_train]]  # [N, K]
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    weights = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ targets)  # [C, K]
    return float(np.mean([classes[i] == v for i, v in zip((b @ weights).argmax(1), y_test, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tower", default="playground/models/dinov2-small")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--layers", default="1,3,6,11,12", help="hidden_states indices (0 = embeddings)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(args.tower).eval()
    processor = AutoImageProcessor.from_pretrained(args.tower)
    processor.size = {"height": args.image_size, "width": args.image_size}
    processor.do_center_crop = False
    layers = [int(v) for v in args.layers.split(",")]
    x_train, c_train, s_train = features(model, processor, "train", args.train_images, layers)
    x_test, c_test, s_test = features(model, processor, "test", args.test_images, layers)
    print(
        f"{len(c_train)} train / {len(c_test)} test images, {args.image_size}px, mean patch token, ridge probe"
    )
    print("| hidden state | colour accuracy | shape accuracy |\n| --- | --- | --- |")
    for layer in layers:
        colour = ridge_probe(x_train[layer], c_train, x_test[layer], c_test)
        shape = ridge_probe(x_train[layer], s_train, x_test[layer], s_test)
        print(f"| h[{layer}] | {colour:.2f} | {shape:.2f} |")


if __name__ == "__main__":
    main()

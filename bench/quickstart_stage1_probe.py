"""How well does the quickstart's stage-1 model read colour and shape? A teacher-forced caption check.

Builds the stage-1 model exactly as stage 2 starts from it (the sized vision tower, the original LLM, the
stage-1 connector of a quickstart run), feeds each fully described test image followed by ``A`` (the plain
template's caption start) and takes the most likely of the eight colour words; then feeds ``A <colour>``
and takes the most likely of the three shape words. The accuracies say how much of the captions' content
stage 1 has put into the image tokens, before any instruction tuning.

    .venv/bin/python bench/quickstart_stage1_probe.py --run checkpoints/quickstart --images 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from llava_vitsplit.data.dataset import count_image_tokens
from llava_vitsplit.quickstart import easy_vqa_source
from llava_vitsplit.train.arguments import DataArguments, ModelArguments
from llava_vitsplit.train.model_setup import build_from_recipe, resolve_recipe


def first_token_ids(tokenizer, words) -> list[int]:
    """The first token of each word as it follows a space (how a caption continues after ``A``)."""
    return [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words]


def next_word(model, processor, pixels, prefixes: list[str], candidate_ids: list[int], num_image_tokens: int):
    """Index into ``candidate_ids`` of the likeliest next token after image tokens + each prefix."""
    tokenizer = processor.tokenizer
    image_tokens = [model.config.image_token_index] * num_image_tokens
    rows = [image_tokens + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prefixes]
    length = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id or 0
    input_ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows])  # [B, T], left-padded
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])  # [B, T]
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels).logits[:, -1]  # [B, V]
    return logits[:, candidate_ids].argmax(-1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="checkpoints/quickstart", help="a quickstart run folder")
    parser.add_argument("--language-model", default="playground/models/smollm2-135m-instruct")
    parser.add_argument("--images", type=int, default=200, help="fully described test images to score")
    args = parser.parse_args()
    run = Path(args.run)
    # the training stack's own resolution: preset + the stage-1 connector's saved settings and weights
    model_args = ModelArguments(
        preset="quickstart",
        vision_tower=str(run / "vision_tower"),
        model_name_or_path=args.language_model,
        stage1_connector=str(run / "pretrain"),
    )
    recipe, _ = resolve_recipe(model_args, DataArguments(), seed=0)
    model, processor = build_from_recipe(recipe)
    model.eval()
    num_image_tokens = count_image_tokens(processor)

    split = easy_vqa_source.load_split("test")
    facts = easy_vqa_source.image_facts(split.questions, "test")
    ids = [i for i in sorted(facts) if facts[i].color and facts[i].shape][: args.images]
    colours, shapes = list(easy_vqa_source.colors()), list(easy_vqa_source.SHAPES)
    colour_ids = first_token_ids(processor.tokenizer, colours)
    shape_ids = first_token_ids(processor.tokenizer, shapes)
    right_colour = right_shape = 0
    for start in range(0, len(ids), 25):
        batch = ids[start : start + 25]
        images = [processor.prepare_images(Image.open(split.image_paths[i]).convert("RGB")) for i in batch]
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]  # [B, 3, S, S]
        picked = next_word(model, processor, pixels, ["A"] * len(batch), colour_ids, num_image_tokens)
        right_colour += sum(colours[p] == facts[i].color for p, i in zip(picked, batch, strict=True))
        prefixes = [f"A {facts[i].color}" for i in batch]
        picked = next_word(model, processor, pixels, prefixes, shape_ids, num_image_tokens)
        right_shape += sum(shapes[p] == facts[i].shape for p, i in zip(picked, batch, strict=True))
    print(f"stage-1 model of {run}: {len(ids)} test images, teacher-forced caption words")
    print(f"colour accuracy {right_colour / len(ids):.2f}, shape accuracy {right_shape / len(ids):.2f}")


if __name__ == "__main__":
    main()

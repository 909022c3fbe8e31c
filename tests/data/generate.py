"""Regenerate the small shipped training set: ``python tests/data/generate.py``.

24 images (64x48, non-square so LLaVA's ``pad`` matters) of one coloured shape on a light background,
``pretrain.json`` (one caption each, for the ``plain`` stage-1 template) and ``finetune.json`` (multi-turn
questions about each image plus text-only arithmetic chats, for ``vicuna_v1``). Deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent
COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (250, 250, 250), "gray": (170, 170, 170)}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def draw(
    shape: str, color: tuple[int, int, int], background: tuple[int, int, int], offset: int
) -> Image.Image:
    image = Image.new("RGB", (64, 48), background)
    pen = ImageDraw.Draw(image)
    x0, y0 = 14 + offset, 8
    box = (x0, y0, x0 + 30, y0 + 30)
    if shape == "circle":
        pen.ellipse(box, fill=color)
    elif shape == "square":
        pen.rectangle(box, fill=color)
    else:
        pen.polygon([(x0 + 15, y0), (x0, y0 + 30), (x0 + 30, y0 + 30)], fill=color)
    return image


def main() -> None:
    (HERE / "images").mkdir(exist_ok=True)
    pretrain, finetune = [], []
    index = 0
    for color_name, color in COLORS.items():
        for shape in SHAPES:
            for bg_name, bg in BACKGROUNDS.items():
                name = f"{index:02d}_{color_name}_{shape}.png"
                draw(shape, color, bg, offset=(index % 3) * 5).save(HERE / "images" / name)
                caption = f"A {color_name} {shape} on a {bg_name} background."
                pretrain.append(
                    {
                        "id": f"cap{index:02d}",
                        "image": f"images/{name}",
                        "conversations": [
                            {"from": "human", "value": "Give a brief description of the image.\n<image>"},
                            {"from": "gpt", "value": caption},
                        ],
                    }
                )
                finetune.append(
                    {
                        "id": f"vqa{index:02d}",
                        "image": f"images/{name}",
                        "conversations": [
                            {"from": "human", "value": "<image>\nWhat shape is in the picture?"},
                            {"from": "gpt", "value": f"The picture shows a {shape}."},
                            {"from": "human", "value": "What colour is it?"},
                            {"from": "gpt", "value": f"It is {color_name}."},
                        ],
                    }
                )
                index += 1
    for a in range(8):
        b = (a * 3) % 5
        finetune.append(
            {
                "id": f"text{a}",
                "conversations": [
                    {"from": "human", "value": f"What is {a} plus {b}?"},
                    {"from": "gpt", "value": f"{a} plus {b} is {a + b}, {NUMBER_WORDS[(a + b) % 10]}."},
                ],
            }
        )
    (HERE / "pretrain.json").write_text(json.dumps(pretrain, indent=1) + "\n")
    (HERE / "finetune.json").write_text(json.dumps(finetune, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Questions with varied images (sizes, aspect ratios, colours, a text-only one) for equivalence tests."""

from __future__ import annotations

from PIL import Image, ImageDraw

from llava_vitsplit.serve.generation import render_prompt, user_messages

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle"]


def shape_image(index: int) -> Image.Image:
    """A coloured shape on a grey background; size and aspect ratio vary with ``index``."""
    width, height = 40 + 9 * (index % 5), 36 + 7 * (index % 3)
    image = Image.new("RGB", (width, height), (120, 120, 120))
    draw = ImageDraw.Draw(image)
    box = (width // 5, height // 5, 4 * width // 5, 4 * height // 5)
    colour = COLOURS[index % len(COLOURS)]
    shape = SHAPES[index % len(SHAPES)]
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
    return image


def question_cases(processor, count: int) -> tuple[list[str], list[list[Image.Image]]]:
    """``count`` rendered prompts and each prompt's images (question 3 is text-only)."""
    prompts, images = [], []
    for index in range(count):
        with_image = index != 3
        text = f"What colour is the {SHAPES[index % len(SHAPES)]}? Question {index}."
        prompts.append(render_prompt(processor, user_messages(text, with_image)))
        images.append([shape_image(index)] if with_image else [])
    return prompts, images


def flat(images: list[list[Image.Image]]) -> list[Image.Image]:
    return [image for row in images for image in row]

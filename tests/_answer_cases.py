"""Questions with varied images (sizes, aspect ratios, colours, text-only, several images) for equivalence tests."""

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


# question 3 is text-only, 2 has two images with tags in its text, 4 has three without tags; others one
IMAGES_PER_QUESTION = {3: 0, 2: 2, 4: 3}


def question_text(index: int) -> str:
    shape = SHAPES[index % len(SHAPES)]
    if IMAGES_PER_QUESTION.get(index) == 2:
        return f"Is the {shape} in <image> the colour of the one in <image>? Question {index}."
    return f"What colour is the {shape}? Question {index}."


def question_cases(processor, count: int) -> tuple[list[str], list[list[Image.Image]]]:
    """``count`` rendered prompts and each prompt's images (``IMAGES_PER_QUESTION``)."""
    prompts, images = [], []
    for index in range(count):
        row = [shape_image(index + 7 * k) for k in range(IMAGES_PER_QUESTION.get(index, 1))]
        messages = user_messages(question_text(index), len(row), processor.image_token)
        prompts.append(render_prompt(processor, messages))
        images.append(row)
    return prompts, images


def flat(images: list[list[Image.Image]]) -> list[Image.Image]:
    return [image for row in images for image in row]

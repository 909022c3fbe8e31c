"""Prompt texts training and inference share: LLaVA-1.5's short-answer suffix, where image tags go in a user
turn (``place_image_tags``), and Vicuna's system prompt and ``vicuna_v1`` template (defined with the other
LLM families in ``llava_vitsplit/llms/families.py``; image parts render as ``<image>\\n`` where they are)."""

from llava_vitsplit.llms import IMAGE_TOKEN
from llava_vitsplit.llms.families import VICUNA_V1_CHAT_TEMPLATE, VICUNA_V1_SYSTEM

# LLaVA-1.5's suffix for short-answer VQA questions (VQAv2, GQA, POPE, VizWiz; its training mix uses it too).
SHORT_ANSWER_PROMPT = "\nAnswer the question using a single word or phrase."

__all__ = ["SHORT_ANSWER_PROMPT", "VICUNA_V1_CHAT_TEMPLATE", "VICUNA_V1_SYSTEM", "place_image_tags"]


def place_image_tags(text: str, num_images: int, image_token: str = IMAGE_TOKEN) -> str:
    """A user turn's text with one ``image_token`` per image, as training and inference both render it.

    Text that already holds ``num_images`` tags is kept as written (the i-th tag is the i-th image);
    text without tags gets ``image_token + "\\n"`` per image in front, as ``num_images`` image parts
    before a text part render. Any other tag count raises ``ValueError``.
    """
    found = text.count(image_token)
    if found == num_images:
        return text
    if found == 0:
        return f"{image_token}\n" * num_images + text
    raise ValueError(f"{num_images} image(s) but {found} {image_token} tag(s) in the text")

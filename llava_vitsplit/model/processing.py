"""``LlavaViTSplitProcessor``: transformers' ``LlavaProcessor`` plus LLaVA's ``pad`` aspect-ratio mode.

``image_aspect_ratio="pad"`` pads every image to a square with the image processor's mean colour before
the usual resize/crop (LLaVA-1.5's ``expand2square``), so nothing is cropped away; ``"resize"`` leaves
the image to the image processor. Each ``<image>`` in the text becomes ``h*w`` image tokens (plus the
prefix tokens when the feature strategy is ``full``), matching the connector's output length.

Chat templates: ``llm_family`` names the LLM's family (``llava_vitsplit/llms``); a tokenizer without a
template gets that family's (LLaVA-1.5's ``vicuna_v1`` when no family is named). ``apply_chat_template``
flattens each message's parts to a string with ``<image>\n`` where an image part was (as the training
records write it) and passes the family's template arguments (Qwen3's ``enable_thinking=False``,
Llama-3.1's date) unless the caller gives them. A prompt that starts with the BOS token (templates that
write it) is tokenized without a second one, as in training.
"""

from __future__ import annotations

from PIL import Image
from transformers import LlavaProcessor

from llava_vitsplit.llms import IMAGE_TOKEN, llm_family
from llava_vitsplit.llms.registry import FALLBACK_FAMILY, bos_in_text

IMAGE_ASPECT_RATIOS = ("pad", "resize")


def flatten_image_parts(messages: list[dict], image_token: str = IMAGE_TOKEN) -> list[dict]:
    """String-content messages for text-only chat templates: image parts become ``<image>\n``."""
    flat = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = "".join(
                f"{image_token}\n" if part["type"] == "image" else part.get("text", "") for part in content
            )
        flat.append({**message, "content": content})
    return flat


def pad_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """Centre ``image`` on a square canvas of colour ``fill`` (side = the longer edge)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill if image.mode == "RGB" else fill[0])
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class LlavaViTSplitProcessor(LlavaProcessor):
    """``LlavaProcessor`` with ``image_aspect_ratio`` (``pad`` | ``resize``)."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=0,
        image_aspect_ratio="pad",
        llm_family=None,
        **kwargs,
    ):
        if image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(
                f"image_aspect_ratio must be one of {IMAGE_ASPECT_RATIOS}, got {image_aspect_ratio!r}"
            )
        self.image_aspect_ratio = image_aspect_ratio
        self.llm_family = llm_family
        if chat_template is None and getattr(tokenizer, "chat_template", None) is None:
            chat_template = self.family.chat_template
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )

    @property
    def family(self):
        """The LLM family spec (Vicuna's for processors saved before families were recorded)."""
        return llm_family(self.llm_family or FALLBACK_FAMILY)

    @property
    def pad_fill(self) -> tuple[int, int, int]:
        mean = getattr(self.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        return tuple(int(round(m * 255)) for m in mean)

    def prepare_images(self, images):
        """Convert to RGB and, in ``pad`` mode, pad to square; accepts one image or a (nested) list."""
        if images is None:
            return None
        if isinstance(images, list | tuple):
            return [self.prepare_images(im) for im in images]
        if isinstance(images, Image.Image):
            image = images.convert("RGB")
            return pad_to_square(image, self.pad_fill) if self.image_aspect_ratio == "pad" else image
        return images  # arrays/tensors are passed through unchanged

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """Render ``conversation`` (image parts flattened) with the family's template arguments."""
        template = chat_template or self.chat_template or getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise ValueError("neither the processor nor its tokenizer has a chat template")
        kwargs = {**self.family.template_kwargs, **kwargs}
        kwargs.setdefault("tokenize", False)
        return self.tokenizer.apply_chat_template(
            flatten_image_parts(conversation, self.image_token), chat_template=template, **kwargs
        )

    def __call__(self, images=None, text=None, **kwargs):
        texts = [text] if isinstance(text, str) else text or []
        if texts and all(bos_in_text(self.tokenizer, t) for t in texts):
            kwargs.setdefault("add_special_tokens", False)  # the template wrote the BOS token
        return super().__call__(images=self.prepare_images(images), text=text, **kwargs)

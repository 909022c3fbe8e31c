"""The vLLM model class for ``llava_vitsplit`` checkpoints (imported by vLLM only, never by the package).

vLLM's Transformers backend builds our ``LlavaViTSplitModel`` with ``AutoModel``, swaps the language
model's attention and linear layers for its own, and calls our ``get_image_features`` for the image
tokens. What this subclass adds: the ``<image>`` placeholder that vLLM writes into chat messages for a
chat template that renders text only (every family's but Vicuna's); the processor then expands it to the image's
``h*w`` tokens.
"""

from __future__ import annotations

from vllm.model_executor.models.transformers import TransformersMultiModalForCausalLM

from llava_vitsplit.llms import IMAGE_TOKEN as IMAGE_PLACEHOLDER


class LlavaViTSplitForVLLM(TransformersMultiModalForCausalLM):
    """vLLM's multimodal Transformers backend with LLaVA's ``<image>`` placeholder."""

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_PLACEHOLDER
        raise ValueError(f"llava_vitsplit models take images only, not {modality!r}")

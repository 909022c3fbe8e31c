"""The LLaVA-ViT-Split vision-language model on transformers' Llava classes."""

from llava_vitsplit.model.configuration import LlavaViTSplitConfig
from llava_vitsplit.model.modeling import (
    LlavaViTSplitForConditionalGeneration,
    LlavaViTSplitModel,
    LlavaViTSplitPreTrainedModel,
)


def register() -> None:
    """Register ``llava_vitsplit`` with transformers' Auto classes (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    from llava_vitsplit.model.processing import LlavaViTSplitProcessor

    AutoConfig.register(LlavaViTSplitConfig.model_type, LlavaViTSplitConfig, exist_ok=True)
    AutoModel.register(LlavaViTSplitConfig, LlavaViTSplitModel, exist_ok=True)
    AutoModelForImageTextToText.register(
        LlavaViTSplitConfig, LlavaViTSplitForConditionalGeneration, exist_ok=True
    )
    AutoProcessor.register(LlavaViTSplitConfig, LlavaViTSplitProcessor, exist_ok=True)


__all__ = [
    "LlavaViTSplitConfig",
    "LlavaViTSplitForConditionalGeneration",
    "LlavaViTSplitModel",
    "LlavaViTSplitPreTrainedModel",
    "register",
]

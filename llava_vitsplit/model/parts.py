"""The processor a training run will use, built from the parts' configs alone (no model weights loaded).

``validate-data``, training and the tests need the exact tokenizer (with ``<image>`` added, as ``build_model`` does)
and image-token count of a run without building the model; this assembles them from the vision tower's
config and image processor and the LLM's config and tokenizer.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoImageProcessor

from llava_vitsplit.tokenizers import load_tokenizer


def processor_from_parts(
    vision_tower: str,
    language_model: str,
    *,
    connector_type: str = "vitsplit",
    vision_feature_select_strategy: str = "default",
    image_aspect_ratio: str = "pad",
):
    from llava_vitsplit.llms.registry import prepare_tokenizer
    from llava_vitsplit.model.builder import ensure_image_token, language_model_family, make_processor
    from llava_vitsplit.model.configuration import LlavaViTSplitConfig

    vision_config = AutoConfig.from_pretrained(vision_tower)
    vision_config = getattr(vision_config, "vision_config", vision_config)  # full CLIP/SigLIP repos
    tokenizer = load_tokenizer(language_model)
    family = language_model_family(language_model, tokenizer)
    prepare_tokenizer(family, tokenizer)
    image_token_id = ensure_image_token(tokenizer)
    config = LlavaViTSplitConfig(
        vision_config=vision_config.to_dict(),
        text_config=AutoConfig.from_pretrained(language_model).to_dict(),
        image_token_index=image_token_id,
        connector_type=connector_type,
        vision_feature_select_strategy=vision_feature_select_strategy,
    )
    return make_processor(
        config, AutoImageProcessor.from_pretrained(vision_tower), tokenizer, image_aspect_ratio, family
    )

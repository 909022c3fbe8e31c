"""Assemble a LLaVA-ViT-Split model (and its processor) from separately pretrained parts.

``build_model(vision_tower, language_model, ...)`` loads a vision model of any family in the backbone
registry (CLIP, SigLIP, DINOv2 ...) and a causal LM (hub ids or local folders), adds the ``<image>``
token to the tokenizer, builds the connector with a seeded init (identical on every rank), and copies
the task head's weights from the tower's last ``K_t`` effective blocks *after* initialisation (transformers re-initialises custom submodules in
``post_init``, so copying earlier would be overwritten).

The combined model is first built on the meta device; the loaded tower and LM modules are then put in
place, so a 7B build needs no second copy of the LLM in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer

from llava_vitsplit.adapter import AdapterConfig
from llava_vitsplit.backbones.hf_layers import effective_depth, truncate_layers
from llava_vitsplit.backbones.registry import load_vision_model
from llava_vitsplit.llms import IMAGE_TOKEN, LLMFamilySpec
from llava_vitsplit.llms.registry import prepare_tokenizer, resolve_family, stop_token_ids
from llava_vitsplit.model.configuration import LlavaViTSplitConfig
from llava_vitsplit.model.connector_registry import connector_spec
from llava_vitsplit.model.modeling import LlavaViTSplitForConditionalGeneration
from llava_vitsplit.model.processing import LlavaViTSplitProcessor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTokenLayout:
    """How ``LlavaProcessor`` counts one image's tokens, so that it matches the connector's output length.

    The processor writes ``(H // patch_size) * (W // patch_size) + num_additional_image_tokens`` tokens,
    one fewer with the ``default`` feature strategy (LLaVA's dropped CLS token).
    """

    patch_size: int
    num_additional_image_tokens: int
    vision_feature_select_strategy: str


def image_token_layout(config: LlavaViTSplitConfig) -> ImageTokenLayout:
    """The processor layout that gives the connector spec's ``num_image_tokens``, under the config's own
    feature strategy (so a checkpoint's config and processor name the same one).

    A spec's ``token_stride`` s makes the processor's patch ``s`` tower patches wide, so its grid is the
    connector's ``(h // s, w // s)``; the spec's ``prefix_tokens`` are the additional tokens."""
    spec = connector_spec(config.connector_type)
    strategy = config.vision_feature_select_strategy
    dropped = 1 if strategy == "default" else 0  # the processor subtracts it; the spec's count has none
    return ImageTokenLayout(
        patch_size=config.vision_config.patch_size * spec.token_stride,
        num_additional_image_tokens=spec.prefix_tokens(config) + dropped,
        vision_feature_select_strategy=strategy,
    )


def ensure_image_token(tokenizer) -> int:
    """Add ``<image>`` as a special token; return the image token id."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def language_model_family(language_model: str, tokenizer=None) -> LLMFamilySpec:
    """The LLM family of a hub id or folder, from its config's ``model_type`` and its tokenizer (an
    ``LLMFamilyError`` naming both and the supported families when unknown or unmaskable)."""
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(language_model)
    return resolve_family(AutoConfig.from_pretrained(language_model).model_type, tokenizer)


def make_processor(
    config: LlavaViTSplitConfig,
    image_processor,
    tokenizer,
    image_aspect_ratio: str = "pad",
    family: LLMFamilySpec | None = None,
):
    layout = image_token_layout(config)
    chat_template = None
    if family is not None and not getattr(tokenizer, "chat_template", None):
        chat_template = family.chat_template
    return LlavaViTSplitProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=layout.patch_size,
        vision_feature_select_strategy=layout.vision_feature_select_strategy,
        num_additional_image_tokens=layout.num_additional_image_tokens,
        image_token=IMAGE_TOKEN,
        image_aspect_ratio=image_aspect_ratio,
        chat_template=chat_template,
        llm_family=family.name if family is not None else None,
    )


def init_connector(model: LlavaViTSplitForConditionalGeneration, seed: int) -> None:
    """Materialise the meta-built connector and initialise it, then copy the task head from the tower.

    The init runs under a forked RNG seeded with ``seed``, so it is identical on every rank and leaves
    the caller's RNG untouched; the task-head copy comes after it (see the module docstring).
    """
    connector = model.connector
    connector.to_empty(device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in connector.modules():
            model._init_weights(module)
    model.init_connector_from_tower()


def build_model(
    vision_tower: str,
    language_model: str,
    *,
    connector_type: str = "vitsplit",
    adapter: AdapterConfig | dict | None = None,
    fusion_output: str = "llm",
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str = "default",
    image_aspect_ratio: str = "pad",
    torch_dtype: torch.dtype = torch.float32,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> tuple[LlavaViTSplitForConditionalGeneration, LlavaViTSplitProcessor]:
    """Build the full model and processor from pretrained parts (see the module docstring)."""
    tokenizer = AutoTokenizer.from_pretrained(language_model)
    family = language_model_family(language_model, tokenizer)  # before any weights load
    vision = load_vision_model(vision_tower, torch_dtype)
    lm = AutoModelForCausalLM.from_pretrained(
        language_model, dtype=torch_dtype, attn_implementation=attn_implementation
    )
    prepare_tokenizer(family, tokenizer)
    image_token_id = ensure_image_token(tokenizer)
    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer))
    image_processor = AutoImageProcessor.from_pretrained(vision_tower)

    uses_adapter = connector_spec(connector_type).uses_adapter
    adapter_dict = AdapterConfig.from_dict(adapter).to_dict() if uses_adapter else None
    config = LlavaViTSplitConfig(
        vision_config=vision.config.to_dict(),
        text_config=lm.config.to_dict(),
        image_token_index=image_token_id,
        connector_type=connector_type,
        adapter=adapter_dict,
        fusion_output=fusion_output,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
    )
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = attn_implementation

    with torch.device("meta"):
        model = LlavaViTSplitForConditionalGeneration(config)
    truncate_layers(vision, effective_depth(config.vision_config.num_hidden_layers, vision_feature_layer))
    vision.requires_grad_(False)
    model.model.vision_tower = vision
    model.model.language_model = lm.model
    model.lm_head = lm.lm_head

    init_connector(model, seed)
    model.to(torch_dtype)

    processor = make_processor(config, image_processor, tokenizer, image_aspect_ratio, family)
    model.generation_config.eos_token_id = stop_token_ids(family, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    grid = config.vision_config.image_size // config.vision_config.patch_size
    model.config.image_seq_length = connector_spec(connector_type).num_image_tokens(config, (grid, grid))
    return model, processor

"""An ``mlp2x_gelu`` model as transformers' own ``LlavaForConditionalGeneration``, with the same weights.

The LLaVA-1.5 baseline of this project (``connector_type="mlp2x_gelu"``) is the same function as
transformers' ``LlavaForConditionalGeneration`` with its ``LlavaMultiModalProjector`` (two linears with a
GELU): the projector is transformers' own class, the language model and LM head are the same modules. The
one structural difference is the tower: this project keeps only the blocks up to the feature layer
(``E`` of them), so the copy reads the tower's last hidden state (``vision_feature_layer=-1`` on the
``E``-block tower), which is the hidden state ``vision_feature_layer`` selects on the full tower.

``to_transformers_llava`` is what third-party trainers (TRL's ``SFTTrainer``) train in the throughput
benchmark (``bench/train_mfu.py``); ``tests/test_transformers_llava.py`` checks that the logits are equal.
"""

from __future__ import annotations

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from llava_vitsplit.model.modeling import LlavaViTSplitForConditionalGeneration

# Settings of LlavaViTSplitConfig that transformers' LlavaConfig does not have
OWN_CONFIG_KEYS = ("connector_type", "adapter", "fusion_output", "model_type", "architectures", "auto_map")


def transformers_llava_config(model: LlavaViTSplitForConditionalGeneration) -> LlavaConfig:
    """``model``'s config as a ``LlavaConfig`` whose feature layer is the last block the tower keeps."""
    if model.config.connector_type != "mlp2x_gelu":
        raise ValueError(
            "only the mlp2x_gelu connector has a transformers LlavaForConditionalGeneration equivalent; "
            f"this model's connector_type is {model.config.connector_type!r}"
        )
    values = {k: v for k, v in model.config.to_dict().items() if k not in OWN_CONFIG_KEYS}
    values["vision_feature_layer"] = -1
    values["projector_hidden_act"] = "gelu"
    values["multimodal_projector_bias"] = True
    config = LlavaConfig(**values)
    # set after construction: a backbone config (DINOv2) checks its out_features against its depth there
    config.vision_config.num_hidden_layers = model.model.vision_depth
    config.text_config._attn_implementation = model.config.text_config._attn_implementation
    config.vision_config._attn_implementation = model.config.vision_config._attn_implementation
    return config


def to_transformers_llava(model: LlavaViTSplitForConditionalGeneration) -> LlavaForConditionalGeneration:
    """A new ``LlavaForConditionalGeneration`` holding a copy of ``model``'s weights (dtype and freezing kept)."""
    config = transformers_llava_config(model)
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    llava.load_state_dict(state, strict=True, assign=True)
    llava.tie_weights()  # a tied LM head shares the embedding again (the clone above made two tensors)
    ours = dict(model.named_buffers())
    for name, buffer in list(llava.named_buffers()):
        if buffer.is_meta:  # non-persistent buffers (rotary inv_freq) are not in the state dict
            module_name, _, attr = name.rpartition(".")
            setattr(llava.get_submodule(module_name), attr, ours[name].clone())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    for name, p in llava.named_parameters():
        p.requires_grad_(name in trainable)
    return llava.train(model.training)

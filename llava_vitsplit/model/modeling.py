"""LLaVA with a ViT-Split connector, built on transformers' own Llava classes.

What is inherited unchanged from ``LlavaModel`` / ``LlavaForConditionalGeneration``: the image-token
merge (``get_placeholder_mask`` raises when the number of ``<image>`` tokens does not match the image
features), the language model call, ``generate`` and its cache handling, the loss on ``labels``.

What changes: ``get_image_features``, the training loss skips unsupervised positions (below), and a
text-only batch with ``labels`` still runs the vision path (below). The
vision tower is frozen (``requires_grad=False``), truncated to its effective depth ``E`` (LLaVA's feature
layer -2 on a 24-block CLIP-L keeps 23 blocks: the last block is never run, stored or loaded) and run under
``torch.no_grad()`` so none of its activations enter the autograd graph. The connector (the connector
registry's module for ``config.connector_type``: ViT-Split heads, the LLaVA MLP, ...; stored under
transformers' Llava key ``multi_modal_projector``) maps the hidden states ``h[0..E]`` to ``[B, N, D_llm]``
image tokens (``N = h*w`` for one token per patch).

Loss on supervised positions only: with ``labels`` (and the default ``logits_to_keep=0``) the LM head runs
only where the next token is supervised (transformers' boolean ``logits_to_keep`` mask), so image,
system and question positions never pay for the ``[D_llm, vocab]`` projection. The loss is the same;
``logits`` then holds those rows only, ``[num_supervised, vocab]``.

The vision path runs in every loss computation: a batch with ``labels`` and no ``pixel_values`` (a
text-only micro-batch) sends one blank image through the tower and the connector and adds its output,
times zero, to the text embeddings. The connector then takes part in every training step with an exact
zero gradient on text-only steps. Under ZeRO-3 this is needed twice over: a parameter that takes no part
in a step keeps its previous gradient (the step would apply the last image step's connector gradient
again), and every rank must gather the same modules in the same order each step (a rank with a text-only
micro-batch next to one with images would otherwise desynchronise the collective all-gathers). The blank
image goes through at the point a real image would, before the LLM. ``generate`` and calls without
``labels`` are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava.modeling_llava import (
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaPreTrainedModel,
)

from llava_vitsplit.adapter import DeformableConv3x3, SparseLayerGate
from llava_vitsplit.backbones.hf_layers import effective_depth, encoder_layers, truncate_layers
from llava_vitsplit.backbones.registry import backbone_spec
from llava_vitsplit.model.configuration import LlavaViTSplitConfig
from llava_vitsplit.model.connector_registry import build_connector, spec_of_module


def _init_conv_like_torch(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """PyTorch's default conv init (kaiming-uniform, a=sqrt(5)), through transformers' init guards."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = weight[0].numel()
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


class LlavaViTSplitPreTrainedModel(LlavaPreTrainedModel):
    config_class = LlavaViTSplitConfig
    config: LlavaViTSplitConfig

    def _init_weights(self, module: nn.Module) -> None:
        # The adapter's convs keep PyTorch's default init (as the released code); deformable offsets start
        # at zero so DCN begins as a plain conv; the gate starts near uniform.
        if isinstance(module, DeformableConv3x3):
            _init_conv_like_torch(module.weight, None)
            init.zeros_(module.offset.weight)
            init.zeros_(module.offset.bias)
        elif isinstance(module, SparseLayerGate):
            init.normal_(module.scores, std=0.02)
        elif isinstance(module, nn.Conv2d):  # only the connector's convs: the tower inits its own
            _init_conv_like_torch(module.weight, module.bias)
        else:
            super()._init_weights(module)


class LlavaViTSplitModel(LlavaViTSplitPreTrainedModel, LlavaModel):
    """Vision tower (frozen, truncated) + connector + language model, without the LM head."""

    def __init__(self, config: LlavaViTSplitConfig):
        LlavaViTSplitPreTrainedModel.__init__(self, config)
        vision_spec = backbone_spec(config.vision_config.model_type)
        # Units never split across devices (device_map) nor inside one FSDP wrap: the tower's block class
        # from the backbone registry; transformers' post_init adds each child model's own list (the
        # language model's decoder layer, whatever the LLM).
        self._no_split_modules = [vision_spec.block_class]
        self.vision_tower = vision_spec.model_cls()._from_config(config.vision_config)
        self.vision_depth = effective_depth(
            config.vision_config.num_hidden_layers, config.vision_feature_layer
        )
        truncate_layers(self.vision_tower, self.vision_depth)
        self.vision_tower.requires_grad_(False)
        self.multi_modal_projector = build_connector(
            config, encoder_layers(self.vision_tower), self.vision_depth
        )
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    @property
    def connector(self) -> nn.Module:
        return self.multi_modal_projector

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision_tower.eval()  # frozen: no dropout, fixed norms, whatever the model's mode
        return self

    def vision_hidden_states(
        self, pixel_values: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], tuple[int, int]]:
        """Frozen tower states ``h[0..E]`` (each ``[B, P + h*w, C]``) and the patch grid ``(h, w)``."""
        patch = self.config.vision_config.patch_size
        grid_hw = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        tower_dtype = next(self.vision_tower.parameters()).dtype
        with torch.no_grad():
            out = self.vision_tower(pixel_values.to(tower_dtype), output_hidden_states=True, return_dict=True)
        return tuple(out.hidden_states), grid_hw

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        idle_vision: bool = False,
        **kwargs,
    ):
        """Llava's forward; ``idle_vision`` without ``pixel_values`` runs one blank image (zero-weighted).

        The blank image goes through inside this module's forward, after the token embedding and before
        the LLM, as a real image would: ZeRO-3 checks that every rank runs its modules in the same order.
        """
        if idle_vision and pixel_values is None and inputs_embeds is None:
            inputs_embeds, input_ids = self.embeddings_with_idle_vision(input_ids), None
        return super().forward(
            input_ids=input_ids, pixel_values=pixel_values, inputs_embeds=inputs_embeds, **kwargs
        )

    def embeddings_with_idle_vision(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Text embeddings ``[B, T, D]`` plus zero times the image tokens of one blank image.

        The values are the plain embeddings exactly; the tower and connector ran (see the module docstring).
        """
        inputs_embeds = self.get_input_embeddings()(input_ids)  # [B, T, D]
        size = self.config.vision_config.image_size
        height, width = (size, size) if isinstance(size, int) else size
        blank = inputs_embeds.new_zeros((1, self.config.vision_config.num_channels, height, width))
        image_tokens = self.get_image_features(blank).pooler_output[0]  # [N, D]
        return inputs_embeds + image_tokens.sum().to(inputs_embeds.dtype) * 0.0

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Image tokens for the LLM: ``pooler_output`` is a list of ``[N, D_llm]`` tensors, one per image."""
        if vision_feature_layer not in (None, self.config.vision_feature_layer):
            raise ValueError(
                f"this model's tower is truncated at vision_feature_layer={self.config.vision_feature_layer}; "
                f"got vision_feature_layer={vision_feature_layer}"
            )
        hidden_states, grid_hw = self.vision_hidden_states(pixel_values)
        connector_dtype = next(self.connector.parameters()).dtype
        hidden_states = tuple(h.to(connector_dtype) for h in hidden_states)
        image_features = self.connector.forward_hidden_states(hidden_states, grid_hw)  # [B, N, D]
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states[-1],
            hidden_states=hidden_states,
            pooler_output=list(image_features),
        )


class LlavaViTSplitForConditionalGeneration(LlavaViTSplitPreTrainedModel, LlavaForConditionalGeneration):
    """The full model with LM head; use it through ``AutoModelForImageTextToText``."""

    def __init__(self, config: LlavaViTSplitConfig):
        LlavaViTSplitPreTrainedModel.__init__(self, config)
        self.model = LlavaViTSplitModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @property
    def connector(self) -> nn.Module:
        return self.model.multi_modal_projector

    @torch.no_grad()
    def init_connector_from_tower(self) -> None:
        """The connector spec's init after any weight init (ViT-Split: the task head copies the tower's
        last ``K_t`` blocks); nothing for a connector whose spec has none."""
        init_from_tower = spec_of_module(self.connector).init
        if init_from_tower is not None:
            init_from_tower(self.connector, self.model.vision_tower)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        """Llava's forward; with ``labels`` the logits and loss cover supervised positions only.

        The inputs ``generate`` passes are named here because it checks them against this signature.
        """
        kwargs.update(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        if labels is not None:
            # No KV cache for a loss: the LLM's config default (use_cache=True) would build one, and
            # transformers reads packed samples' boundaries from position_ids only without a cache.
            kwargs.setdefault("use_cache", False)
        if labels is not None and pixel_values is None:
            kwargs["idle_vision"] = True  # a text-only loss still runs the vision path (module docstring)
        if labels is None or not isinstance(logits_to_keep, int) or logits_to_keep != 0:
            return super().forward(labels=labels, logits_to_keep=logits_to_keep, **kwargs)
        shift_labels = F.pad(labels[:, 1:], (0, 1), value=-100)  # [B, L]: the token each position predicts
        supervised = shift_labels != -100  # [B, L]
        outputs = super().forward(logits_to_keep=supervised, **kwargs)  # logits [num_supervised, V]
        outputs.loss = self.loss_function(
            logits=outputs.logits,
            labels=None,
            shift_labels=shift_labels[supervised],  # [num_supervised]
            vocab_size=self.config.text_config.vocab_size,
            num_items_in_batch=kwargs.get("num_items_in_batch"),
        )
        return outputs

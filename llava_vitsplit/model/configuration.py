"""``LlavaViTSplitConfig``: transformers' ``LlavaConfig`` plus the connector's settings.

The config fully describes a checkpoint: the vision tower config (the *full* pretrained tower; the
model drops blocks past ``vision_feature_layer``), the text config, and the connector:

- ``connector_type``: a name in the connector registry (``connector_registry.py``): ``"vitsplit"`` (task
  head + prior head + fusion) or ``"mlp2x_gelu"`` (LLaVA-1.5's two-layer GELU MLP on the feature layer, for
  baselines and ablations), or one registered later.
- ``adapter``: the ``AdapterConfig`` fields as a dict (connectors whose spec ``uses_adapter``: ViT-Split).
- ``fusion_output``: ``"llm"`` makes the fusion net emit the LLM width directly (released code);
  ``"vision_mlp"`` keeps the fusion at the vision width and maps it to the LLM width with a 2-layer GELU
  MLP (far fewer parameters).
"""

from __future__ import annotations

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import LlavaConfig

from llava_vitsplit.adapter import AdapterConfig
from llava_vitsplit.model.connector_registry import connector_spec


@strict
class LlavaViTSplitConfig(LlavaConfig):
    model_type = "llava_vitsplit"

    connector_type: str = "vitsplit"  # checked against the connector registry
    adapter: dict | None = None
    fusion_output: Literal["llm", "vision_mlp"] = "llm"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not isinstance(self.vision_feature_layer, int):
            raise ValueError(
                f"llava_vitsplit supports a single int vision_feature_layer, got {self.vision_feature_layer!r}"
            )
        spec = connector_spec(self.connector_type)  # an unknown type names the registered ones
        if self.fusion_output not in ("llm", "vision_mlp"):
            raise ValueError(f"fusion_output must be 'llm' or 'vision_mlp', got {self.fusion_output!r}")
        if spec.uses_adapter:
            # Validate and normalise (fills defaults, rejects unknown keys).
            self.adapter = AdapterConfig.from_dict(self.adapter).to_dict()

    @property
    def adapter_config(self) -> AdapterConfig:
        return AdapterConfig.from_dict(self.adapter)

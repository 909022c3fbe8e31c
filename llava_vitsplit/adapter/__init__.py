"""The ViT-Split adapter: task head, prior head, fusion net and prior-layer selection.

This sub-package is the one implementation of the method. It imports only ``torch`` and
``torchvision`` so that the vision-language model (``llava_vitsplit.model``) and the dense-task heads
(``llava_vitsplit.dense``) share it without pulling in each other's dependencies.

Index convention used everywhere: a frozen tower with ``L`` blocks produces hidden states
``h[0]`` (embeddings) ... ``h[L]``; "block output ``i``" (0-based) is ``h[i + 1]``. Prior layers are
given as block-output indices, so ``[2, 5, 8, 11]`` on a 12-block tower reads ``h[3], h[6], h[9], h[12]``.
"""

from llava_vitsplit.adapter.config import AdapterConfig
from llava_vitsplit.adapter.conv import DeformableConv3x3, make_conv3x3
from llava_vitsplit.adapter.heads import ConvBlock, FusionNet, PriorHead
from llava_vitsplit.adapter.layer_selection import SparseLayerGate, uniform_layer_indices
from llava_vitsplit.adapter.task_head import TaskHead
from llava_vitsplit.adapter.vitsplit import ViTSplitAdapter, tokens_to_map

__all__ = [
    "AdapterConfig",
    "ConvBlock",
    "DeformableConv3x3",
    "FusionNet",
    "PriorHead",
    "SparseLayerGate",
    "TaskHead",
    "ViTSplitAdapter",
    "make_conv3x3",
    "tokens_to_map",
    "uniform_layer_indices",
]

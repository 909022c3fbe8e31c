"""The one table of supported transformers vision towers: a ``BackboneSpec`` per model type.

Everything that depends on the tower's family reads it: the block list and prefix-token count
(``hf_layers``, used by the VLM connector and the dense adapter), the frozen dense backbone
(``hf.HFBackbone``: model class, final norm, position interpolation), the VLM's tower loading and
``_no_split_modules`` (``llava_vitsplit.model``), and the tiny test towers (``llava_vitsplit.testing``).

Adding a family is one ``register_backbone(BackboneSpec(...))``. Model classes are named, not imported:
``model_class()`` resolves the name on ``transformers`` (whose namespace is lazy), so importing this
module loads no model family.

Input normalisation (``normalization``): the mean/std each family's image processor uses, which the
dense code applies to its inputs (``backbones.normalization`` resolves it for a dense backbone, where a
checkpoint's own ``preprocessor_config.json`` wins). DINOv2: ImageNet's; CLIP: OpenAI's CLIP values;
SigLIP: 0.5 / 0.5.

Final norms for dense features (``final_norm``):

- DINOv2: ``layernorm``, applied to every token in the model's own forward.
- CLIP: ``None``. ``post_layernorm`` is applied to the pooled CLS token only (``pooler_output``); the
  patch tokens of ``last_hidden_state`` never pass through it, so it was never trained on them.
- SigLIP: ``post_layernorm``. ``SiglipVisionModel.forward`` applies it to *all* tokens
  (``last_hidden_state``), and the attention-pooling head then reads every normalised token, so the
  norm was trained on the whole token map; it is SigLIP's equivalent of DINOv2's final norm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Normalization:
    """Per-channel (R, G, B) ``mean`` and ``std`` an input in [0, 1] is normalised with: ``(x - mean) / std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"normalisation needs 3 means and 3 positive stds, got {mean} / {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def as_tuple(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.mean, self.std

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        return cls(tuple(data["mean"]), tuple(data["std"]))


IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = Normalization((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HALF = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def one_cls_token(vision_config) -> int:
    """A CLS token before the patch grid (CLIP, DINOv2)."""
    return 1


def no_prefix_tokens(vision_config) -> int:
    """Patch tokens only (SigLIP)."""
    return 0


def cls_and_registers(vision_config) -> int:
    """CLS plus the register tokens (DINOv2 with registers)."""
    return 1 + int(getattr(vision_config, "num_register_tokens", 0) or 0)


def same_shape(shape: dict[str, int]) -> dict[str, Any]:
    """Tiny config kwargs for families that take the common shape keys as they are."""
    return dict(shape)


def with_projection(shape: dict[str, int]) -> dict[str, Any]:
    """CLIP's vision config also names the (unused here) projection width."""
    return {**shape, "projection_dim": shape["hidden_size"]}


def with_mlp_ratio(shape: dict[str, int]) -> dict[str, Any]:
    """DINOv2 sizes its MLP by ``mlp_ratio`` instead of ``intermediate_size``."""
    kwargs = {k: v for k, v in shape.items() if k != "intermediate_size"}
    return {**kwargs, "mlp_ratio": shape["intermediate_size"] // shape["hidden_size"]}


def with_registers(shape: dict[str, int]) -> dict[str, Any]:
    return {**with_mlp_ratio(shape), "num_register_tokens": 2}


@dataclass(frozen=True)
class BackboneSpec:
    """What the code needs to know about one transformers vision-tower family.

    - ``model_type``: the config's ``model_type`` (``aliases``: other config types that load this
      family's vision tower, e.g. the dual-encoder ``"clip"`` checkpoint for ``clip_vision_model``).
    - ``model_class``: the vision model's class name in ``transformers`` (resolved lazily).
    - ``block_path``: dotted attribute path from the model to its ``nn.ModuleList`` of blocks.
    - ``block_class``: the block class name (a unit never split across devices / FSDP wrap unit).
    - ``prefix_tokens``: ``vision_config -> P``, tokens before the patch grid.
    - ``final_norm``: attribute of the model the dense heads apply to their features, or ``None``.
    - ``interpolate_pos_encoding``: the forward needs ``interpolate_pos_encoding=True`` for inputs of
      other sizes than the config's (DINOv2 always interpolates).
    - ``image_processor``: the transformers image processor this family's checkpoints ship with.
    - ``normalization``: the ``image_mean`` / ``image_std`` the family's published checkpoints are
      preprocessed with (dense inputs; e.g. DINOv2 ships ImageNet's in its ``BitImageProcessor`` config).
    - ``tiny_config``: config kwargs of a tiny test tower from the common shape keys (``hidden_size``,
      ``intermediate_size``, ``num_hidden_layers``, ``num_attention_heads``, ``image_size``,
      ``patch_size``).
    """

    model_type: str
    model_class: str
    block_path: str
    block_class: str
    prefix_tokens: Callable[[Any], int]
    final_norm: str | None
    interpolate_pos_encoding: bool
    image_processor: str
    normalization: Normalization
    tiny_config: Callable[[dict[str, int]], dict[str, Any]] = same_shape
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.model_type, *self.aliases)

    def model_cls(self) -> type[nn.Module]:
        """The transformers vision model class (imports that one family)."""
        import transformers

        return getattr(transformers, self.model_class)

    def blocks(self, vision_model: nn.Module) -> nn.ModuleList:
        """The ``nn.ModuleList`` of blocks of ``vision_model`` (each ``[B, T, C] -> [B, T, C]``)."""
        module: Any = vision_model
        for name in self.block_path.split("."):
            module = getattr(module, name, None)
        if not isinstance(module, nn.ModuleList):
            raise TypeError(
                f"{type(vision_model).__name__} has no block list at {self.block_path!r} "
                f"(the {self.model_type!r} backbone spec)"
            )
        return module

    def norm(self, vision_model: nn.Module) -> nn.Module | None:
        """The final norm the dense heads apply (see the module docstring), or ``None``."""
        return None if self.final_norm is None else getattr(vision_model, self.final_norm)


# Every name (model type or alias) -> its spec.
BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` under its model type and aliases; a name already taken raises."""
    taken = [name for name in spec.names if name in BACKBONES]
    if taken:
        raise ValueError(f"vision model_type {', '.join(map(repr, taken))} is already registered")
    for name in spec.names:
        BACKBONES[name] = spec
    return spec


def unregister_backbone(model_type: str) -> None:
    """Remove the spec registered as ``model_type`` (and its aliases)."""
    spec = backbone_spec(model_type)
    for name in spec.names:
        del BACKBONES[name]


def supported_model_types() -> list[str]:
    """Every registered name (model types and aliases), sorted."""
    return sorted(BACKBONES)


def backbone_spec(model_type: str) -> BackboneSpec:
    """The spec for a config ``model_type`` or alias; unknown types raise with the valid list."""
    if model_type not in BACKBONES:
        raise ValueError(
            f"unsupported vision model_type {model_type!r}; supported: {', '.join(supported_model_types())}"
        )
    return BACKBONES[model_type]


def spec_for_model(vision_model: nn.Module) -> BackboneSpec:
    """The spec of a transformers vision model (read from its ``config.model_type``)."""
    config = getattr(vision_model, "config", None)
    if config is None:
        raise TypeError(f"{type(vision_model).__name__} is not a transformers vision model (no .config)")
    return backbone_spec(config.model_type)


def load_vision_model(name_or_path: str, torch_dtype: torch.dtype = torch.float32) -> nn.Module:
    """The vision tower of a checkpoint (a full CLIP / SigLIP folder or hub id gives its vision half)."""
    from transformers import AutoConfig

    spec = backbone_spec(AutoConfig.from_pretrained(name_or_path).model_type)
    return spec.model_cls().from_pretrained(name_or_path, dtype=torch_dtype)


register_backbone(
    BackboneSpec(
        model_type="dinov2",
        model_class="Dinov2Model",
        block_path="encoder.layer",
        block_class="Dinov2Layer",
        prefix_tokens=one_cls_token,
        final_norm="layernorm",
        interpolate_pos_encoding=False,
        image_processor="BitImageProcessor",
        normalization=IMAGENET,
        tiny_config=with_mlp_ratio,
    )
)
register_backbone(
    BackboneSpec(
        model_type="dinov2_with_registers",
        model_class="Dinov2WithRegistersModel",
        block_path="encoder.layer",
        block_class="Dinov2WithRegistersLayer",
        prefix_tokens=cls_and_registers,
        final_norm="layernorm",
        interpolate_pos_encoding=False,
        image_processor="BitImageProcessor",
        normalization=IMAGENET,
        tiny_config=with_registers,
    )
)
register_backbone(
    BackboneSpec(
        model_type="clip_vision_model",
        aliases=("clip",),
        model_class="CLIPVisionModel",
        block_path="encoder.layers",
        block_class="CLIPEncoderLayer",
        prefix_tokens=one_cls_token,
        final_norm=None,
        interpolate_pos_encoding=True,
        image_processor="CLIPImageProcessor",
        normalization=OPENAI_CLIP,
        tiny_config=with_projection,
    )
)
register_backbone(
    BackboneSpec(
        model_type="siglip_vision_model",
        aliases=("siglip",),
        model_class="SiglipVisionModel",
        block_path="encoder.layers",
        block_class="SiglipEncoderLayer",
        prefix_tokens=no_prefix_tokens,
        final_norm="post_layernorm",
        interpolate_pos_encoding=True,
        image_processor="SiglipImageProcessor",
        normalization=HALF,
    )
)

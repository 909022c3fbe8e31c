"""Which parts of a LLaVA-ViT-Split model train in which stage (the one freezing policy).

Components of the full model: ``vision_tower`` (always frozen), ``connector`` (the whole
``multi_modal_projector``: task head, prior head, fusion, projector MLP) and ``language_model``
(decoder + LM head). Sub-components of the connector: ``task_head``, ``prior_head`` (incl. a sparse
gate), ``fusion`` and ``projector`` (an MLP: the LLaVA baseline's, or the one after a vision-width fusion).

Stage ``pretrain`` (stage 1) trains the connector only; ``finetune`` (stage 2) trains connector + LLM.
"""

from __future__ import annotations

from torch import nn

STAGE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "pretrain": ("connector",),
    "finetune": ("connector", "language_model"),
}


def model_components(model) -> dict[str, list[nn.Module]]:
    """Top-level components of a ``LlavaViTSplitForConditionalGeneration`` (LM head counted with the LLM)."""
    inner = model.model
    return {
        "vision_tower": [inner.vision_tower],
        "connector": [inner.multi_modal_projector],
        "language_model": [inner.language_model, model.lm_head],
    }


def connector_components(connector: nn.Module) -> dict[str, list[nn.Module]]:
    """Sub-components of the connector (``ViTSplitConnector`` or the LLaVA MLP)."""
    adapter = getattr(connector, "adapter", None)
    if adapter is None:
        return {"projector": [connector]}
    parts = {
        "task_head": [adapter.task_head],
        "prior_head": [adapter.prior_head] + ([adapter.prior_gate] if adapter.prior_gate is not None else []),
        "fusion": [adapter.fusion],
    }
    if connector.mlp is not None:
        parts["projector"] = [connector.mlp]
    return parts


def apply_stage(model, stage: str) -> None:
    """Set ``requires_grad`` for ``stage``; the vision tower is frozen in every stage."""
    if stage not in STAGE_COMPONENTS:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGE_COMPONENTS)}")
    trainable = STAGE_COMPONENTS[stage]
    for name, modules in model_components(model).items():
        for module in modules:
            module.requires_grad_(name in trainable)

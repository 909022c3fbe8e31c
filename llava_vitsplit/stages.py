"""Which parts of a LLaVA-ViT-Split model train in which stage: the one freezing table.

``FREEZING[stage][component]`` is ``True`` (trains), ``False`` (frozen) or ``LORA`` (frozen, with LoRA
on its linear layers). The components cover every parameter of the model: ``vision_tower``,
the connector's parts ``task_head``, ``prior_head`` (incl. a sparse gate), ``fusion`` and ``projector``
(an MLP: the LLaVA baseline's, or the one after a vision-width fusion), ``language_model`` (the decoder)
and ``lm_head``. A connector has only some of the parts (the baseline: ``projector`` alone).

``apply_stage`` sets ``requires_grad`` from the table, ``params.py`` counts each stage's trainable
parameters from it, ``train/lora.py`` takes the LoRA targets and ``modules_to_save`` from it, and the
trainer's learning-rate groups take the connector, the task head and the deformable convs' offset
predictors by module (``lr_group_modules``).
"""

from __future__ import annotations

from torch import nn

from llava_vitsplit.adapter.conv import DeformableConv3x3

LORA = "lora"
CONNECTOR_PARTS = ("task_head", "prior_head", "fusion", "projector")
COMPONENTS = ("vision_tower", *CONNECTOR_PARTS, "language_model", "lm_head")
_CONNECTOR_TRAINS = dict.fromkeys(CONNECTOR_PARTS, True)
FREEZING: dict[str, dict[str, bool | str]] = {
    "pretrain": {"vision_tower": False, **_CONNECTOR_TRAINS, "language_model": False, "lm_head": False},
    "finetune": {"vision_tower": False, **_CONNECTOR_TRAINS, "language_model": True, "lm_head": True},
    "finetune_lora": {"vision_tower": False, **_CONNECTOR_TRAINS, "language_model": LORA, "lm_head": False},
}
REPORTED_STAGES = ("pretrain", "finetune")  # the LoRA stage's count depends on the rank: not reported


def stage_table(stage: str, freeze_connector: bool = False) -> dict[str, bool | str]:
    """``FREEZING[stage]``; ``freeze_connector`` (``--freeze_mm_mlp_adapter``) freezes the connector too."""
    if stage not in FREEZING:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(FREEZING)}")
    table = dict(FREEZING[stage])
    if freeze_connector:
        table.update(dict.fromkeys(CONNECTOR_PARTS, False))
    return table


def connector_components(connector: nn.Module) -> dict[str, list[nn.Module]]:
    """The parts of one connector (``ViTSplitConnector`` or the LLaVA MLP) it has, by table name."""
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


def model_components(model) -> dict[str, list[nn.Module]]:
    """Every component of a ``LlavaViTSplitForConditionalGeneration`` present, by table name."""
    inner = model.model
    return {
        "vision_tower": [inner.vision_tower],
        **connector_components(model.connector),
        "language_model": [inner.language_model],
        "lm_head": [model.lm_head],
    }


def _check_coverage(model, components: dict[str, list[nn.Module]]) -> None:
    covered = {id(p) for modules in components.values() for m in modules for p in m.parameters()}
    missing = [name for name, p in model.named_parameters() if id(p) not in covered]
    if missing:
        raise ValueError(f"parameters outside every component of the freezing table: {missing[:5]}")


def apply_stage(model, stage: str, freeze_connector: bool = False) -> None:
    """Set ``requires_grad`` of every parameter from ``FREEZING[stage]`` (``LORA``: frozen base weights)."""
    table = stage_table(stage, freeze_connector)
    components = model_components(model)
    _check_coverage(model, components)
    for name, modules in components.items():
        for module in modules:
            module.requires_grad_(table[name] is True)


def lora_components(stage: str) -> list[str]:
    """The components that get LoRA on their linear layers in ``stage``."""
    return [name for name, trains in stage_table(stage).items() if trains == LORA]


def connector_copies(model) -> list[nn.Module]:
    """The connector; under peft's ``modules_to_save`` the frozen original and its trained copies."""
    connector = model.get_base_model().connector if hasattr(model, "get_base_model") else model.connector
    copies = getattr(connector, "modules_to_save", None)  # peft's ModulesToSaveWrapper
    if copies is None:
        return [connector]
    return [connector.original_module, *copies.values()]


def lr_group_modules(model) -> dict[str, list[nn.Module]]:
    """The modules whose parameters get their own learning rate: the whole connector, its task head and
    the deformable convs' offset predictors (a parameter in several takes the most specific one)."""
    connectors = connector_copies(model)
    task_heads = [m for c in connectors for m in connector_components(c).get("task_head", [])]
    offsets = [m.offset for c in connectors for m in c.modules() if isinstance(m, DeformableConv3x3)]
    return {"connector": connectors, "task_head": task_heads, "offset": offsets}

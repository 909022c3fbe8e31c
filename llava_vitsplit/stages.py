"""The training stages as data: one ``TrainStage`` per stage, with its row of the freezing table.

``STAGES[name]`` says everything a run asks of its stage: what trains (``freezing[component]`` is
``True``, ``False`` or ``LORA``: frozen, with LoRA on its linear layers), which of LLaVA's flags select
it (``--tune_mm_mlp_adapter True`` picks ``pretrain``, ``--lora_enable True`` picks ``finetune_lora``;
``--stage NAME`` names any stage), what it saves (the stage-1 connector alone or the whole model),
whether every sample needs an image, whether it records the parts' provenance next to its save, whether it
may start from a stage-1 connector and its default conversation template. The components cover every
parameter of the model: ``vision_tower``, the connector's parts ``task_head``, ``prior_head`` (incl. a
sparse gate), ``fusion`` and ``mlp`` (LLaVA's MLP, or the one after a vision-width fusion),
``language_model`` (the decoder) and ``lm_head``. A connector has only some of the parts (the
connector registry's ``parts``, ``model/connector_registry.py``).

``apply_stage`` sets ``requires_grad`` from the table, ``params.py`` counts each stage's trainable
parameters from it, ``train/model_setup.py`` takes the LoRA targets and ``modules_to_save`` from it, the
presets' ``train`` blocks are keyed by its names, and the trainer's learning-rate groups take the
connector, the task head and the deformable convs' offset predictors by module (``lr_group_modules``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from llava_vitsplit.adapter.conv import DeformableConv3x3

LORA = "lora"
CONNECTOR_PARTS = ("task_head", "prior_head", "fusion", "mlp")
COMPONENTS = ("vision_tower", *CONNECTOR_PARTS, "language_model", "lm_head")
SAVES_CONNECTOR, SAVES_MODEL = "connector", "model"
# LLaVA's boolean flags that pick a stage; --freeze_backbone (LLaVA: freeze the LLM) only checks the stage.
STAGE_FLAGS = ("tune_mm_mlp_adapter", "lora_enable")


@dataclass(frozen=True)
class TrainStage:
    """One training stage (see the module docstring).

    Attributes:
        name: ``--stage`` and the key of a preset's ``train`` block.
        freezing: component -> ``True`` / ``False`` / ``LORA``, every name of ``COMPONENTS``.
        selected_by: LLaVA's flags (of ``STAGE_FLAGS``) whose ``True`` picks this stage.
        saves: ``SAVES_CONNECTOR`` (``connector.safetensors`` + settings) or ``SAVES_MODEL`` (a checkpoint,
            or the LoRA adapter when the table has ``LORA``).
        needs_images: every sample must have an image (a caption stage); text-only ones are skipped.
        records_provenance: the save records which tower and LLM the connector was trained for.
        takes_stage1_connector: ``--stage1_connector`` (``--pretrain_mm_mlp_adapter``) may give a
            stage-1 connector to start from.
        template: the conversation template when ``--conv_template`` (``--version``) is unset (``plain``, or ``auto``: the LLM's).
    """

    name: str
    freezing: dict[str, bool | str]
    saves: str
    needs_images: bool = False
    records_provenance: bool = False
    takes_stage1_connector: bool = True
    template: str = "auto"
    selected_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if set(self.freezing) != set(COMPONENTS):
            raise ValueError(f"stage {self.name!r}: freezing must name exactly {COMPONENTS}")
        if self.saves not in (SAVES_CONNECTOR, SAVES_MODEL):
            raise ValueError(f"stage {self.name!r}: saves must be {SAVES_CONNECTOR!r} or {SAVES_MODEL!r}")
        if unknown := set(self.selected_by) - set(STAGE_FLAGS):
            raise ValueError(f"stage {self.name!r}: selected_by {sorted(unknown)}; valid: {STAGE_FLAGS}")

    @property
    def lora(self) -> bool:
        return LORA in self.freezing.values()

    @property
    def trains_language_model(self) -> bool:
        return self.freezing["language_model"] is not False


def freezing_row(language_model: bool | str, lm_head: bool, connector: bool = True) -> dict[str, bool | str]:
    return {
        "vision_tower": False,
        **dict.fromkeys(CONNECTOR_PARTS, connector),
        "language_model": language_model,
        "lm_head": lm_head,
    }


STAGES: dict[str, TrainStage] = {}
DEFAULT_STAGE = "finetune"  # no flag, no --stage: LLaVA's stage 2
REPORTED_STAGES = ("pretrain", "finetune")  # the LoRA stage's count depends on the rank: not reported


def register_stage(stage: TrainStage) -> TrainStage:
    """Add ``stage`` (a taken name or a flag another stage is selected by is an error)."""
    if stage.name in STAGES:
        raise ValueError(f"training stage {stage.name!r} is already registered")
    for other in STAGES.values():
        if taken := set(stage.selected_by) & set(other.selected_by):
            raise ValueError(f"stage {stage.name!r}: {sorted(taken)} already select {other.name!r}")
    STAGES[stage.name] = stage
    return stage


def unregister_stage(name: str) -> None:
    STAGES.pop(name, None)


register_stage(
    TrainStage(
        name="pretrain",
        freezing=freezing_row(language_model=False, lm_head=False),
        saves=SAVES_CONNECTOR,
        needs_images=True,
        records_provenance=True,
        takes_stage1_connector=False,
        template="plain",
        selected_by=("tune_mm_mlp_adapter",),
    )
)
register_stage(TrainStage("finetune", freezing_row(language_model=True, lm_head=True), SAVES_MODEL))
register_stage(
    TrainStage(
        "finetune_lora",
        freezing_row(language_model=LORA, lm_head=False),
        SAVES_MODEL,
        selected_by=("lora_enable",),
    )
)


def train_stage(name: str) -> TrainStage:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}")
    return STAGES[name]


def resolve_stage(stage: str | None, flags: dict[str, bool], freeze_backbone: bool = False) -> TrainStage:
    """The run's stage from ``--stage`` and LLaVA's flags (``STAGE_FLAGS`` -> value); conflicts are errors."""
    set_flags = [flag for flag in STAGE_FLAGS if flags.get(flag)]
    picked = {s.name: s for s in STAGES.values() for flag in set_flags if flag in s.selected_by}
    flag_text = " ".join(f"--{flag} True" for flag in set_flags)
    if stage is not None:
        chosen = train_stage(stage)
        if any(name != stage for name in picked):
            raise ValueError(f"--stage {stage} conflicts with {flag_text} (stage {', '.join(picked)})")
    elif len(picked) > 1:
        raise ValueError(f"{flag_text} select different stages ({', '.join(picked)}); give one, or --stage")
    else:
        chosen = next(iter(picked.values()), None) or train_stage(DEFAULT_STAGE)
    if freeze_backbone and chosen.trains_language_model:
        frozen = [s.name for s in STAGES.values() if not s.trains_language_model]
        raise ValueError(
            f"--freeze_backbone True freezes the LLM, but stage {chosen.name} trains it; "
            f"use a stage with a frozen LLM: --stage {' | '.join(frozen)}"
        )
    return chosen


def stage_table(stage: str, freeze_connector: bool = False) -> dict[str, bool | str]:
    """``STAGES[stage].freezing``; ``freeze_connector`` (``--freeze_connector``) freezes the connector too."""
    table = dict(train_stage(stage).freezing)
    if freeze_connector:
        table.update(dict.fromkeys(CONNECTOR_PARTS, False))
    return table


def connector_components(connector: nn.Module) -> dict[str, list[nn.Module]]:
    """The parts of one connector, by table name, from its registry spec (``ConnectorSpec.parts``)."""
    from llava_vitsplit.model.connector_registry import spec_of_module

    parts = spec_of_module(connector).parts(connector)
    if unknown := set(parts) - set(CONNECTOR_PARTS):
        raise ValueError(f"connector parts {sorted(unknown)} are not in the freezing table {CONNECTOR_PARTS}")
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
    """Set ``requires_grad`` of every parameter from the stage's table (``LORA``: frozen base weights)."""
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

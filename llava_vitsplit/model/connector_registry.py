"""The connector registry: one ``ConnectorSpec`` per ``connector_type`` a checkpoint's config may name.

Everything that depends on the connector's type reads its spec here: the config's validation
(``configuration.py``), the module the model builds (``build_connector``), its parts in the freezing table
(``stages.py``: what trains per stage, the parameter report, LoRA's ``modules_to_save``, the lr groups),
its init after the generic weight init (``builder.init_connector``), how many image tokens it emits per
image and so the processor's image-token layout (``builder.image_token_layout``; the training data, the
serving paths and vLLM count image tokens through that processor), the settings its stage-1 save records
and checks (``train/connector_io.py``) and the command line's choices (``train/arguments.py``).

Every connector module is built as ``module_class(config, tower_blocks, num_layers)`` and exposes
``forward_hidden_states(hidden_states, grid_hw) -> [B, N, D_llm]``, where ``hidden_states`` are the frozen
tower's ``h[0..E]`` (each ``[B, P + h*w, C]``). The module is stored at ``model.multi_modal_projector``
(transformers' Llava key, so checkpoints and vLLM load it by that name) and reached as ``model.connector``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from llava_vitsplit.backbones.hf_layers import encoder_layers, num_prefix_tokens
from llava_vitsplit.model.connector import MLPConnector, ViTSplitConnector

# The connector parts the freezing table knows (``stages.CONNECTOR_PARTS``); a spec's ``parts`` uses these.
TASK_HEAD, PRIOR_HEAD, FUSION, MLP = "task_head", "prior_head", "fusion", "mlp"


@dataclass(frozen=True)
class ConnectorSpec:
    """Everything the code asks of one connector type.

    Attributes:
        name: the config's ``connector_type`` (and ``--connector_type`` / ``--mm_projector_type``).
        module_class: built as ``module_class(config, tower_blocks, num_layers)``.
        parts: the built module -> its parts by freezing-table name (``TASK_HEAD``, ``PRIOR_HEAD``,
            ``FUSION``, ``MLP``); together they must hold every parameter of the module.
        token_stride: patches per image token along each side: the ``(h, w)`` patch grid becomes
            ``(h // s) * (w // s)`` tokens (1: one token per patch; 2: a 2x2 pooling).
        prefix_tokens: config -> tokens emitted besides the grid's (the MLP's with the ``full``
            feature strategy keeps the tower's CLS / register tokens).
        init: ``(connector, tower)`` -> None, run after the generic weight init (ViT-Split copies its
            task head from the tower's last blocks here).
        uses_adapter: the config's ``adapter`` (``AdapterConfig``) describes this connector.
        stage1_settings: config fields, besides the connector type, feature layer and widths, that a
            stage-1 save records and stage 2 requires to be equal.
        description: one line for the command line's help.
    """

    name: str
    module_class: type[nn.Module]
    parts: Callable[[nn.Module], dict[str, list[nn.Module]]]
    description: str
    token_stride: int = 1
    prefix_tokens: Callable[[object], int] = lambda config: 0
    init: Callable[[nn.Module, nn.Module], None] | None = None
    uses_adapter: bool = False
    stage1_settings: tuple[str, ...] = ()

    def num_image_tokens(self, config, grid_hw: tuple[int, int]) -> int:
        """Image tokens one image of patch grid ``grid_hw`` becomes."""
        height, width = grid_hw
        return (height // self.token_stride) * (width // self.token_stride) + self.prefix_tokens(config)


def vitsplit_parts(connector: ViTSplitConnector) -> dict[str, list[nn.Module]]:
    adapter = connector.adapter
    parts = {
        TASK_HEAD: [adapter.task_head],
        PRIOR_HEAD: [adapter.prior_head] + ([adapter.prior_gate] if adapter.prior_gate is not None else []),
        FUSION: [adapter.fusion],
    }
    if connector.mlp is not None:
        parts[MLP] = [connector.mlp]
    return parts


def copy_task_head(connector: ViTSplitConnector, tower: nn.Module) -> None:
    """The task head starts as the tower's last ``K_t`` effective blocks (after any weight init)."""
    k_t = connector.adapter.config.num_task_layers
    connector.adapter.task_head.load_from_blocks(list(encoder_layers(tower))[-k_t:])


def mlp_prefix_tokens(config) -> int:
    full = config.vision_feature_select_strategy == "full"
    return num_prefix_tokens(config.vision_config) if full else 0


CONNECTORS: dict[str, ConnectorSpec] = {}


def register_connector(spec: ConnectorSpec) -> ConnectorSpec:
    """Add ``spec`` (a name already taken is an error: unregister it first)."""
    if spec.name in CONNECTORS:
        raise ValueError(f"connector type {spec.name!r} is already registered")
    if spec.token_stride < 1:
        raise ValueError(f"connector {spec.name!r}: token_stride must be >= 1, got {spec.token_stride}")
    CONNECTORS[spec.name] = spec
    return spec


def unregister_connector(name: str) -> None:
    CONNECTORS.pop(name, None)


def connector_types() -> tuple[str, ...]:
    return tuple(CONNECTORS)


def connector_spec(name: str) -> ConnectorSpec:
    """The spec of ``connector_type`` ``name``; an unknown one is an error listing the valid types."""
    if name not in CONNECTORS:
        raise ValueError(f"unknown connector_type {name!r}; valid: {', '.join(CONNECTORS)}")
    return CONNECTORS[name]


def spec_of_module(connector: nn.Module) -> ConnectorSpec:
    """The spec whose ``module_class`` built ``connector`` (exact class, not duck typing)."""
    for spec in CONNECTORS.values():
        if type(connector) is spec.module_class:
            return spec
    raise ValueError(f"{type(connector).__name__} is no registered connector's module_class")


def build_connector(config, tower_blocks: Sequence[nn.Module], num_layers: int) -> nn.Module:
    return connector_spec(config.connector_type).module_class(config, tower_blocks, num_layers)


register_connector(
    ConnectorSpec(
        name="vitsplit",
        module_class=ViTSplitConnector,
        parts=vitsplit_parts,
        description="ViT-Split task head + prior head + fusion (+ an MLP with fusion_output=vision_mlp)",
        init=copy_task_head,
        uses_adapter=True,
        stage1_settings=("adapter", "fusion_output"),
    )
)
register_connector(
    ConnectorSpec(
        name="mlp2x_gelu",
        module_class=MLPConnector,
        parts=lambda connector: {MLP: [connector]},
        description="LLaVA-1.5's two-layer GELU MLP on the feature layer",
        prefix_tokens=mlp_prefix_tokens,
        stage1_settings=("adapter", "fusion_output"),  # recorded as before (None / "llm"), so old saves match
    )
)

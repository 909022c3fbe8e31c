"""Plain-data settings of one ViT-Split adapter (no torch modules, JSON-serialisable).

The same dataclass is stored inside the VLM's transformers config (as a dict) and inside the dense
presets, so both sub-packages describe an adapter with the same fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

PriorSelection = Literal["uniform", "explicit", "sparse_gate"]
ConvType = Literal["deformable", "plain"]


@dataclass
class AdapterConfig:
    """Every choice of a ViT-Split adapter.

    Attributes:
        num_task_layers: K_t, how many of the effective tower's last blocks the task head copies.
        prior_selection: ``uniform`` (sampling formula with ``prior_start``), ``explicit``
            (``prior_layers`` as given) or ``sparse_gate`` (learned top-k gate over all blocks).
        num_prior_layers: K_p; for ``sparse_gate`` the number of mixed slots.
        prior_start: b in the uniform-sampling formula (skip the noisiest early blocks).
        prior_layers: explicit block-output indices (0-based) when ``prior_selection == "explicit"``.
        uniform_rounding: ``round`` (the paper's formula) or ``floor`` (``int()`` as in released code).
        gate_top_k: entries kept per column of the sparse gate.
        gate_temperature: softmax temperature of the sparse gate.
        conv_type: ``deformable`` (DCNv1 3x3, the paper) or ``plain`` 3x3 (released LLaVA code).
        fusion_channels: output width of the fusion net; ``None`` means the vision width.
        task_head_keeps_prefix: feed CLS/register tokens through the task head and drop them after
            (the paper; makes the task head reproduce the tower at init) or drop them before it
            (the released LLaVA code).
    """

    num_task_layers: int = 1
    prior_selection: PriorSelection = "uniform"
    num_prior_layers: int = 4
    prior_start: int = 2
    prior_layers: list[int] = field(default_factory=list)
    uniform_rounding: Literal["round", "floor"] = "round"
    gate_top_k: int = 4
    gate_temperature: float = 0.5
    conv_type: ConvType = "deformable"
    fusion_channels: int | None = None
    task_head_keeps_prefix: bool = True

    def __post_init__(self) -> None:
        if self.num_task_layers < 1:
            raise ValueError(f"num_task_layers (K_t) must be >= 1, got {self.num_task_layers}")
        if self.prior_selection not in ("uniform", "explicit", "sparse_gate"):
            raise ValueError(
                f"prior_selection must be 'uniform', 'explicit' or 'sparse_gate', got {self.prior_selection!r}"
            )
        if self.conv_type not in ("deformable", "plain"):
            raise ValueError(f"conv_type must be 'deformable' or 'plain', got {self.conv_type!r}")
        if self.uniform_rounding not in ("round", "floor"):
            raise ValueError(f"uniform_rounding must be 'round' or 'floor', got {self.uniform_rounding!r}")
        if self.prior_selection == "explicit" and not self.prior_layers:
            raise ValueError("prior_selection='explicit' needs a non-empty prior_layers list")
        if self.prior_selection != "explicit" and self.num_prior_layers < 1:
            raise ValueError(f"num_prior_layers (K_p) must be >= 1, got {self.num_prior_layers}")
        self.prior_layers = [int(i) for i in self.prior_layers]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | AdapterConfig | None) -> AdapterConfig:
        if isinstance(data, AdapterConfig):
            return data
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown adapter setting(s) {unknown}; valid ones: {sorted(known)}")
        return cls(**data)

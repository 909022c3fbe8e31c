"""Command-line arguments of ``llava-vitsplit train``, with LLaVA-1.5's names where they still apply.

Three dataclasses parsed by ``transformers.HfArgumentParser``: ``ModelArguments`` (parts, connector,
stage; the adapter flags are generated from ``AdapterConfig``, ``train/adapter_args.py``),
``DataArguments`` and ``TrainingArguments`` (transformers' own plus LLaVA's extras: LoRA,
``group_by_modality_length``, ``packing``, ``model_max_length``, ``connector_lr``, ...). Model fields left unset
take their value from ``--preset`` (if given), then from the built-in default; training arguments left
unset take their value from the preset's training recipe for the run's stage (``--train_recipe`` names
another preset's; ``train/recipe_args.py``), then from the dataclass default.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import transformers

from llava_vitsplit.data.packing import packing_layout
from llava_vitsplit.model.connector_registry import CONNECTORS, connector_types
from llava_vitsplit.stages import STAGES, resolve_stage
from llava_vitsplit.train.adapter_args import AdapterArguments, adapter_overrides
from llava_vitsplit.train.recipe_args import with_recipe
from llava_vitsplit.train.step_guard import DEFAULT_MAX_NONFINITE

# Arguments named for what they are, and LLaVA-1.5's flag for each, accepted as an alias: the connector
# (LLaVA's "mm projector" / "mm MLP adapter"), its stage-1 output and its learning rate.
LLAVA_ALIASES = {
    "connector_type": "mm_projector_type",
    "stage1_connector": "pretrain_mm_mlp_adapter",
    "connector_lr": "mm_projector_lr",
    "freeze_connector": "freeze_mm_mlp_adapter",
}
# Built-in values of the preset-able model fields, used when neither the command line nor a preset sets them.
MODEL_DEFAULTS = {
    "connector_type": "vitsplit",
    "mm_vision_select_layer": -2,
    "fusion_output": "llm",
}


@dataclass
class ModelArguments(AdapterArguments):
    """The parts, the connector and the stage; the ViT-Split adapter's fields come from ``AdapterArguments``."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The LLM (hub id or folder), or a llava_vitsplit checkpoint to continue"},
    )
    vision_tower: str | None = field(default=None, metadata={"help": "Vision tower (CLIP/SigLIP/DINOv2)"})
    preset: str | None = field(default=None, metadata={"help": "Named preset (llava-vitsplit params --help)"})
    train_recipe: str | None = field(
        default=None,
        metadata={"help": "Preset whose `train` block gives the training defaults (default: --preset)"},
    )
    conv_template: str | None = field(
        default=None,
        metadata={
            "aliases": ["--version"],  # LLaVA's name for it
            "help": "Conversation template (LLaVA: --version): plain (stage 1 default) | auto (the LLM's "
            "family, stage 2 default) | a family name, which must be the LLM's (llava-vitsplit llm-families)",
        },
    )
    stage: str | None = field(
        default=None,
        metadata={
            "help": f"Training stage: {' | '.join(STAGES)} (llava_vitsplit/stages.py); default: from "
            "LLaVA's flags (--tune_mm_mlp_adapter True: pretrain, --lora_enable True: finetune_lora), "
            "else finetune"
        },
    )
    tune_mm_mlp_adapter: bool = field(
        default=False, metadata={"help": "LLaVA's flag for --stage pretrain (train only the connector)"}
    )
    freeze_backbone: bool = field(
        default=False,
        metadata={"help": "LLaVA's flag: the LLM stays frozen (checked against the stage's table)"},
    )
    stage1_connector: str | None = field(
        default=None,
        metadata={
            "aliases": ["--pretrain_mm_mlp_adapter"],
            "help": "Stage 2: the stage-1 output folder or its connector.safetensors",
        },
    )
    allow_connector_mismatch: bool = field(
        default=False,
        metadata={"help": "Stage 2: load a stage-1 connector trained for another tower or LLM (warns)"},
    )
    connector_type: str | None = field(
        default=None,
        metadata={
            "aliases": ["--mm_projector_type"],
            "help": "Connector type (model/connector_registry.py): "
            + "; ".join(f"{name}: {spec.description}" for name, spec in CONNECTORS.items()),
        },
    )
    mm_vision_select_layer: int | None = field(default=None, metadata={"help": "LLaVA's feature layer (-2)"})
    fusion_output: str | None = field(default=None, metadata={"help": "llm | vision_mlp"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2"})

    def adapter_overrides(self) -> dict:
        """The ``AdapterConfig`` fields given on the command line."""
        return adapter_overrides(self)


@dataclass
class DataArguments:
    data_path: str = field(
        default=None,
        metadata={"help": "LLaVA .json/.jsonl file(s), comma-separated, or one mixture .yaml/.json file"},
    )
    image_folder: str | None = field(default=None)
    image_aspect_ratio: str | None = field(default=None, metadata={"help": "pad | resize"})
    strict_data: bool = field(default=False, metadata={"help": "Stop on the first bad sample"})
    max_images_per_sample: int | None = field(
        default=None,
        metadata={"help": "Skip (count as too_many_images) records with more images; default: no limit"},
    )
    lazy_preprocess: bool = field(default=True, metadata={"help": "Accepted for LLaVA scripts; always lazy"})
    is_multimodal: bool = field(default=True, metadata={"help": "Accepted for LLaVA scripts"})

    @property
    def data_paths(self) -> list[str]:
        return [p.strip() for p in (self.data_path or "").split(",") if p.strip()]


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    model_max_length: int = field(
        default=2048, metadata={"help": "Longer samples are truncated (or skipped)"}
    )
    group_by_modality_length: bool = field(default=False)
    packing: bool = field(
        default=False,
        metadata={
            "help": "Pack each micro-batch's samples into rows of up to --model_max_length tokens (position "
            "ids restart per sample; the same loss and gradients as unpacked, less padding)"
        },
    )
    connector_lr: float | None = field(
        default=None, metadata={"aliases": ["--mm_projector_lr"], "help": "Connector learning rate"}
    )
    task_head_lr_multiplier: float = field(
        default=1.0, metadata={"help": "Task head lr = connector lr x this"}
    )
    deform_offset_lr_multiplier: float = field(
        default=1.0,
        metadata={
            "help": "Deformable-conv offset predictors' lr = connector lr x this (0.1 steadies DCN, as in mmcv)"
        },
    )
    freeze_connector: bool = field(
        default=False,
        metadata={"aliases": ["--freeze_mm_mlp_adapter"], "help": "Stage 2 with a frozen connector"},
    )
    lora_enable: bool = field(default=False)
    lora_r: int = field(default=128)
    lora_alpha: int = field(default=256)
    lora_dropout: float = field(default=0.05)
    lora_bias: str = field(default="none")
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "LLaVA's name; transformers 5 takes a ratio as --warmup_steps < 1"}
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "Sets --gradient_accumulation_steps to this / (per-device batch x WORLD_SIZE)"},
    )
    max_nonfinite_steps: int = field(
        default=DEFAULT_MAX_NONFINITE,
        metadata={
            "help": "Stop after this many optimizer steps in a row with a non-finite loss or grad norm"
        },
    )
    output_dir: str = field(default="checkpoints/llava-vitsplit")
    print_config: bool = field(
        default=False,
        metadata={"help": "Print every resolved setting and its source, then exit (nothing is built)"},
    )

    def __post_init__(self):
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            self.warmup_steps = self.warmup_ratio
        if self.max_nonfinite_steps < 1:
            raise ValueError(f"--max_nonfinite_steps must be at least 1, got {self.max_nonfinite_steps}")
        super().__post_init__()


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """The three argument dataclasses of ``argv`` (default: ``sys.argv[1:]``) over its training recipe."""
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    argv = with_recipe(sys.argv[1:] if argv is None else list(argv))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if not data_args.data_paths:
        parser.error("--data_path is required")
    if data_args.max_images_per_sample is not None and data_args.max_images_per_sample < 1:
        parser.error(f"--max_images_per_sample must be >= 1, got {data_args.max_images_per_sample}")
    if training_args.packing:
        try:
            packing_layout(model_args.attn_implementation)
        except ValueError as err:
            parser.error(str(err))
    if model_args.connector_type not in (None, *connector_types()):
        parser.error(
            f"--connector_type {model_args.connector_type!r} is no registered connector type; "
            f"valid: {', '.join(connector_types())}"
        )
    stage = resolve_stage(
        model_args.stage, stage_flags(model_args, training_args), model_args.freeze_backbone
    )
    model_args.stage = stage.name
    training_args.lora_enable = stage.lora  # the stage's table decides; --lora_enable only selects it
    return model_args, data_args, training_args


def canonical_argument(name: str) -> str:
    """The argument's field name for a flag given under LLaVA's name (``LLAVA_ALIASES``)."""
    return {alias: name for name, alias in LLAVA_ALIASES.items()}.get(name, name)


def stage_flags(model_args: ModelArguments, training_args: TrainingArguments) -> dict[str, bool]:
    """LLaVA's stage-selecting flags as given (``stages.STAGE_FLAGS``)."""
    return {"tune_mm_mlp_adapter": model_args.tune_mm_mlp_adapter, "lora_enable": training_args.lora_enable}

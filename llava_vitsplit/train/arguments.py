"""Command-line arguments of ``llava-vitsplit train``, with LLaVA-1.5's names where they still apply.

Three dataclasses parsed by ``transformers.HfArgumentParser``: ``ModelArguments`` (parts, connector,
stage), ``DataArguments`` and ``TrainingArguments`` (transformers' own plus LLaVA's extras: LoRA,
``group_by_modality_length``, ``model_max_length``, ``mm_projector_lr``, ...). Model fields left unset
take their value from ``--preset`` (if given), then from the built-in default; training arguments left
unset take their value from the preset's training recipe for the run's stage (``--train_recipe`` names
another preset's; ``train/recipe_args.py``), then from the dataclass default.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import transformers

from llava_vitsplit.train.recipe_args import with_recipe
from llava_vitsplit.train.step_guard import DEFAULT_MAX_NONFINITE

# Built-in values of the preset-able model fields, used when neither the command line nor a preset sets them.
MODEL_DEFAULTS = {
    "mm_projector_type": "vitsplit",
    "mm_vision_select_layer": -2,
    "fusion_output": "llm",
}
ADAPTER_FIELDS = (
    "num_task_layers",
    "prior_selection",
    "num_prior_layers",
    "prior_start",
    "prior_layers",
    "uniform_rounding",
    "conv_type",
    "fusion_channels",
    "task_head_keeps_prefix",
)


@dataclass
class ModelArguments:
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
    tune_mm_mlp_adapter: bool = field(
        default=False, metadata={"help": "Stage 1: train only the connector (task head included)"}
    )
    pretrain_mm_mlp_adapter: str | None = field(
        default=None, metadata={"help": "Stage 2: the stage-1 output folder or its connector.safetensors"}
    )
    allow_connector_mismatch: bool = field(
        default=False,
        metadata={"help": "Stage 2: load a stage-1 connector trained for another tower or LLM (warns)"},
    )
    mm_projector_type: str | None = field(default=None, metadata={"help": "vitsplit | mlp2x_gelu"})
    mm_vision_select_layer: int | None = field(default=None, metadata={"help": "LLaVA's feature layer (-2)"})
    # ViT-Split adapter settings (AdapterConfig fields); unset ones come from the preset or the defaults.
    num_task_layers: int | None = field(default=None, metadata={"help": "K_t"})
    prior_selection: str | None = field(default=None, metadata={"help": "uniform | explicit | sparse_gate"})
    num_prior_layers: int | None = field(default=None, metadata={"help": "K_p"})
    prior_start: int | None = field(default=None, metadata={"help": "b of the uniform sampling"})
    prior_layers: str | None = field(default=None, metadata={"help": "Comma-separated block indices"})
    uniform_rounding: str | None = field(default=None, metadata={"help": "round | floor"})
    conv_type: str | None = field(default=None, metadata={"help": "deformable | plain"})
    fusion_channels: int | None = field(default=None)
    task_head_keeps_prefix: bool | None = field(default=None)
    fusion_output: str | None = field(default=None, metadata={"help": "llm | vision_mlp"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2"})

    def adapter_overrides(self) -> dict:
        out = {}
        for name in ADAPTER_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "prior_layers":
                value = [int(v) for v in str(value).split(",") if v.strip()]
            out[name] = value
        return out


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
    mm_projector_lr: float | None = field(default=None, metadata={"help": "Connector learning rate"})
    task_head_lr_multiplier: float = field(
        default=1.0, metadata={"help": "Task head lr = connector lr x this"}
    )
    deform_offset_lr_multiplier: float = field(
        default=1.0,
        metadata={
            "help": "Deformable-conv offset predictors' lr = connector lr x this (0.1 steadies DCN, as in mmcv)"
        },
    )
    freeze_mm_mlp_adapter: bool = field(default=False, metadata={"help": "Stage 2 with a frozen connector"})
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
    return model_args, data_args, training_args

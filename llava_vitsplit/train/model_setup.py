"""Build the model and processor for a training run and set what trains (the stage policy).

Resolution order for every model setting: the command line, then the stage-1 connector's saved
settings (stage 2), then ``--preset``, then the built-in default. What trains is the freezing row of the
run's stage (``llava_vitsplit.stages.STAGES``, chosen by ``--stage`` or LLaVA's flags): ``pretrain``
(``--tune_mm_mlp_adapter``) trains the connector only, task head included; ``finetune`` trains connector
+ LLM; ``finetune_lora`` (``--lora_enable``) trains LoRA on the LLM's linear layers and the whole
connector; the vision tower never trains. The global seed is set before building, so the connector
init, the new ``<image>`` embedding row and the LoRA init are the same on every rank and in ``merge-lora``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, set_seed

from llava_vitsplit.model.connector_registry import connector_spec
from llava_vitsplit.stages import TrainStage, resolve_stage, train_stage
from llava_vitsplit.train.arguments import MODEL_DEFAULTS, DataArguments, ModelArguments, TrainingArguments
from llava_vitsplit.train.connector_io import load_connector, read_connector_settings
from llava_vitsplit.train.provenance import part_provenance

logger = logging.getLogger(__name__)

RECIPE_FILE = "llava_vitsplit_recipe.json"  # how to rebuild a LoRA run's base model (for merge-lora)


@dataclass
class BuildRecipe:
    """Everything ``build_model`` needs; saved next to LoRA adapters so ``merge-lora`` rebuilds the base."""

    vision_tower: str
    language_model: str
    connector_type: str
    adapter: dict | None
    fusion_output: str
    vision_feature_layer: int
    vision_feature_select_strategy: str
    image_aspect_ratio: str
    attn_implementation: str = "sdpa"
    seed: int = 0
    stage1_connector: str | None = None  # the stage-1 connector to load (--stage1_connector)
    base_checkpoint: str | None = None  # continue from a saved llava_vitsplit checkpoint instead of parts
    allow_connector_mismatch: bool = False  # load a stage-1 connector trained for other parts

    def save(self, out_dir: str | Path) -> None:
        Path(out_dir, RECIPE_FILE).write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> BuildRecipe:
        path = Path(folder, RECIPE_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {folder} is not a llava-vitsplit LoRA output folder")
        data = json.loads(path.read_text())
        data.pop("extra", None)  # an always-empty field that earlier versions wrote
        if "pretrain_mm_mlp_adapter" in data:  # its name (LLaVA's flag) in recipes written earlier
            data["stage1_connector"] = data.pop("pretrain_mm_mlp_adapter")
        return cls(**data)


def stage_of(model_args: ModelArguments) -> TrainStage:
    """The run's stage (``parse_args`` resolved ``--stage`` and LLaVA's flags into ``model_args.stage``)."""
    if model_args.stage is None:  # arguments not from parse_args
        return resolve_stage(None, {"tune_mm_mlp_adapter": model_args.tune_mm_mlp_adapter})
    return train_stage(model_args.stage)


def _saved_connector_settings(model_args: ModelArguments) -> dict:
    if not model_args.stage1_connector:
        return {}
    return read_connector_settings(model_args.stage1_connector)


def _pick(saved: dict, cli_value, saved_key: str, preset_value, default):
    """The command line's value (checked against the stage-1 connector's), else the saved, preset, default."""
    if cli_value is not None:
        if saved_key in saved and saved[saved_key] != cli_value:
            raise ValueError(
                f"{saved_key}={cli_value!r} disagrees with the stage-1 connector's {saved[saved_key]!r}"
            )
        return cli_value
    if saved_key in saved:
        return saved[saved_key]
    return preset_value if preset_value is not None else default


def _resolve_adapter(model_args: ModelArguments, saved: dict, preset) -> dict:
    adapter = dict(saved.get("adapter") or (preset.adapter if preset and preset.adapter else {}))
    overrides = model_args.adapter_overrides()
    if saved and any(adapter.get(k) != v for k, v in overrides.items()):
        raise ValueError(f"adapter settings {overrides} disagree with the stage-1 connector's {adapter}")
    adapter.update(overrides)
    return adapter


def resolve_recipe(
    model_args: ModelArguments, data_args: DataArguments, seed: int
) -> tuple[BuildRecipe, str]:
    """The build recipe and the conversation template name for this run."""
    from llava_vitsplit.presets import get_preset

    preset = get_preset(model_args.preset) if model_args.preset else None
    saved = _saved_connector_settings(model_args)
    vision_tower = (
        model_args.vision_tower or saved.get("vision_tower") or (preset.vision_tower if preset else None)
    )
    language_model = (
        model_args.model_name_or_path
        or saved.get("language_model")
        or (preset.language_model if preset else None)
    )
    if not vision_tower or not language_model:
        raise ValueError("give --model_name_or_path and --vision_tower (or a --preset that names them)")
    connector_type = _pick(
        saved,
        model_args.connector_type,
        "connector_type",
        preset and preset.connector_type,
        MODEL_DEFAULTS["connector_type"],
    )
    recipe = BuildRecipe(
        vision_tower=vision_tower,
        language_model=language_model,
        connector_type=connector_type,
        adapter=_resolve_adapter(model_args, saved, preset)
        if connector_spec(connector_type).uses_adapter
        else None,
        fusion_output=_pick(
            saved, model_args.fusion_output, "fusion_output", preset and preset.fusion_output, "llm"
        ),
        vision_feature_layer=_pick(
            saved,
            model_args.mm_vision_select_layer,
            "vision_feature_layer",
            preset and preset.vision_feature_layer,
            MODEL_DEFAULTS["mm_vision_select_layer"],
        ),
        vision_feature_select_strategy=(preset.vision_feature_select_strategy if preset else "default"),
        image_aspect_ratio=data_args.image_aspect_ratio or (preset.image_aspect_ratio if preset else "pad"),
        attn_implementation=model_args.attn_implementation,
        seed=seed,
        stage1_connector=model_args.stage1_connector,
        allow_connector_mismatch=model_args.allow_connector_mismatch,
    )
    return recipe, requested_conv_template(model_args)


def requested_conv_template(model_args: ModelArguments) -> str:
    """``--conv_template`` (alias ``--version``; command line or training recipe), else the stage's template:
    ``plain`` in stage 1, ``auto`` (the LLM's family, resolved by ``resolve_conv_template``) in stage 2."""
    return model_args.conv_template or stage_of(model_args).template


def llm_family_name(recipe: BuildRecipe) -> str:
    """The LLM's family (``llava_vitsplit/llms``), read from configs and the tokenizer, no weights: an
    unknown family or an unmaskable tokenizer template raises here, before the model is built."""
    if recipe.base_checkpoint:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(recipe.base_checkpoint).family.name
    from llava_vitsplit.model.builder import language_model_family

    return language_model_family(recipe.language_model).name


def resolve_conv_template(conv_template: str, family: str) -> str:
    """The conversation template of a run whose LLM is of ``family``: ``auto`` is the family's own; a
    family's format other than the LLM's is refused (the saved processor renders the LLM's template at
    inference, so training on another would differ silently)."""
    from llava_vitsplit.data.templates import AUTO, LEGACY_AUTO, PlainTemplate, template_names

    if conv_template in (AUTO, LEGACY_AUTO):
        return family
    if conv_template not in template_names():
        raise ValueError(f"unknown --conv_template (--version) {conv_template!r}; valid: {template_names()}")
    if conv_template not in (PlainTemplate.name, family):
        raise ValueError(
            f"--conv_template (--version) {conv_template} is the {conv_template!r} family's conversation format, but "
            f"the LLM is a {family!r} model whose chat template the saved processor uses at inference; "
            f"leave it unset (or auto) to train on {family!r}'s"
        )
    return conv_template


def autocast_on_cpu(training_args: TrainingArguments) -> bool:
    """bf16/fp16 on the CPU without DeepSpeed: the Trainer (accelerate) runs the steps under CPU autocast,
    so the weights and the optimizer stay fp32 (DeepSpeed instead keeps fp32 master weights of a bf16 model)."""
    mixed = training_args.bf16 or training_args.fp16
    return mixed and training_args.use_cpu and getattr(training_args, "hf_deepspeed_config", None) is None


def torch_dtype_for(training_args: TrainingArguments) -> torch.dtype:
    """The dtype the model is built in: fp32 under CPU autocast, else the run's precision."""
    if autocast_on_cpu(training_args):
        return torch.float32
    if training_args.bf16:
        return torch.bfloat16
    if training_args.fp16:
        return torch.float16
    return torch.float32


def describe_precision(training_args: TrainingArguments) -> str:
    """The training log's line on precision; on the CPU it names this CPU's native bf16 support."""
    from llava_vitsplit.util.cpu_precision import cpu_precision

    mode = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"
    if autocast_on_cpu(training_args):
        mode += " autocast on the CPU, fp32 weights and optimizer"
    elif training_args.use_cpu or not torch.cuda.is_available():
        mode += " on the CPU"
    if training_args.use_cpu or not torch.cuda.is_available():
        mode += f"; this CPU's choice: {cpu_precision().describe()}"
    return f"precision: {mode}"


def build_from_recipe(recipe: BuildRecipe, torch_dtype: torch.dtype = torch.float32):
    """Deterministic (seeded) build of ``(model, processor)``, with the stage-1 connector loaded if any."""
    from llava_vitsplit.model.builder import build_model

    set_seed(recipe.seed)
    if recipe.base_checkpoint:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(recipe.base_checkpoint, dtype=torch_dtype)
        return model, AutoProcessor.from_pretrained(recipe.base_checkpoint)
    model, processor = build_model(
        recipe.vision_tower,
        recipe.language_model,
        connector_type=recipe.connector_type,
        adapter=recipe.adapter,
        fusion_output=recipe.fusion_output,
        vision_feature_layer=recipe.vision_feature_layer,
        vision_feature_select_strategy=recipe.vision_feature_select_strategy,
        image_aspect_ratio=recipe.image_aspect_ratio,
        torch_dtype=torch_dtype,
        seed=recipe.seed,
        attn_implementation=recipe.attn_implementation,
    )
    if recipe.stage1_connector:
        provenance = part_provenance(model, recipe.vision_tower, recipe.language_model)
        load_connector(model, recipe.stage1_connector, provenance, recipe.allow_connector_mismatch)
        logger.info("loaded the stage-1 connector from %s", recipe.stage1_connector)
    return model, processor


def is_llava_vitsplit_checkpoint(path: str | None) -> bool:
    if not path:
        return False
    try:
        return AutoConfig.from_pretrained(path).model_type == "llava_vitsplit"
    except (OSError, ValueError):
        return False


def _module_names(model) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


def lora_target_modules(model, stage: str, family_modules: tuple[str, ...] | None = None) -> str:
    """A regex over the linear layers of the components the freezing table gives LoRA in ``stage``
    (the LLM's: never the tower's, the connector's or the LM head), limited to the LLM family's
    ``lora_target_modules`` (each of which must exist in the LLM)."""
    from llava_vitsplit.stages import lora_components, model_components

    components, names = model_components(model), _module_names(model)
    modules = [m for part in lora_components(stage) for m in components[part]]
    leaves = sorted(
        {
            name.rsplit(".", 1)[-1]
            for m in modules
            for name, sub in m.named_modules()
            if isinstance(sub, nn.Linear)
        }
    )
    if family_modules is not None:
        missing = sorted(set(family_modules) - set(leaves))
        if missing:
            raise ValueError(
                f"LoRA target modules {missing} of the LLM family are no linear layers of the LLM"
            )
        leaves = [leaf for leaf in leaves if leaf in family_modules]
    scopes = sorted({names[id(m)].rsplit(".", 1)[-1] for m in modules})
    scope = scopes[0] if len(scopes) == 1 else "(" + "|".join(scopes) + ")"
    return r".*\." + scope + r"\..*\.(" + "|".join(leaves) + r")$"


def lora_modules_to_save(model, table: dict) -> list[str] | None:
    """The modules the freezing table trains fully next to LoRA: the whole connector when all its parts
    train (saved as ``multi_modal_projector``, the checkpoint key), else the training parts."""
    from llava_vitsplit.stages import connector_components, model_components

    names = _module_names(model)
    connector_parts = connector_components(model.connector)
    if all(table[part] is True for part in connector_parts):
        saved = [names[id(model.connector)].rsplit(".", 1)[-1]]
    else:
        saved = [names[id(m)] for part, mods in connector_parts.items() if table[part] is True for m in mods]
    other = {part: mods for part, mods in model_components(model).items() if part not in connector_parts}
    saved += [names[id(m)] for part, mods in other.items() if table[part] is True for m in mods]
    return saved or None


def apply_lora(
    model,
    training_args: TrainingArguments,
    table: dict,
    stage: str = "finetune_lora",
    family_modules: tuple[str, ...] | None = None,
):
    """Wrap ``model`` with peft LoRA on the table's ``LORA`` components; its fully trained ones (the
    connector) are saved in the LoRA adapter as ``modules_to_save``."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=training_args.lora_r,
        lora_alpha=training_args.lora_alpha,
        lora_dropout=training_args.lora_dropout,
        bias=training_args.lora_bias,
        target_modules=lora_target_modules(model, stage, family_modules),
        modules_to_save=lora_modules_to_save(model, table),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _checkpoint_recipe(path: str, seed: int) -> BuildRecipe:
    """The recipe that continues from a saved llava_vitsplit checkpoint (its config holds the settings)."""
    config = AutoConfig.from_pretrained(path)
    return BuildRecipe(
        vision_tower="",
        language_model="",
        connector_type=config.connector_type,
        adapter=config.adapter,
        fusion_output=config.fusion_output,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_aspect_ratio="",
        seed=seed,
        base_checkpoint=path,
    )


def resolve_build(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments):
    """``(recipe, conversation template)`` of a run, from configs and the tokenizer only (nothing built yet)."""
    if is_llava_vitsplit_checkpoint(model_args.model_name_or_path):
        recipe = _checkpoint_recipe(model_args.model_name_or_path, training_args.seed)
        conv_template = requested_conv_template(model_args)
    else:
        recipe, conv_template = resolve_recipe(model_args, data_args, training_args.seed)
    return recipe, resolve_conv_template(conv_template, llm_family_name(recipe))


def setup_model(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments):
    """``(model, processor, recipe, conv_template)`` ready for the Trainer, with the freezing table applied."""
    from llava_vitsplit.stages import apply_stage, stage_table

    stage = stage_of(model_args)
    if not stage.takes_stage1_connector and model_args.stage1_connector:
        raise ValueError(
            f"stage {stage.name} trains a connector from scratch: --stage1_connector "
            "(--pretrain_mm_mlp_adapter, a stage-1 connector to start from) does not apply"
        )
    recipe, conv_template = resolve_build(model_args, data_args, training_args)
    logger.info(describe_precision(training_args))
    model, processor = build_from_recipe(recipe, torch_dtype_for(training_args))
    model.config.use_cache = False

    freeze_connector = training_args.freeze_connector
    apply_stage(model, stage.name, freeze_connector)
    if stage.lora:
        table = stage_table(stage.name, freeze_connector)
        model = apply_lora(model, training_args, table, stage.name, processor.family.lora_target_modules)
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("stage %s: %d trainable parameters", stage.name, trainable)
    return model, processor, recipe, conv_template

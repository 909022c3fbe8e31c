"""What a training run will use, and where each setting came from: ``--print_config`` and ``run_config.json``.

Every field of the three argument dataclasses, the model build (``BuildRecipe``) and the conversation
template is listed with its value and one source: ``command line``, ``environment variable NAME`` (the
stage scripts name the variables they turned into flags in ``LLAVA_VITSPLIT_ENV_ARGS``), ``preset recipe
P (train.STAGE)``, ``preset P``, ``stage-1 connector DIR``, ``LLM family of MODEL`` (the template),
``derived from --global_batch_size`` or ``default``. ``llava-vitsplit train ... --print_config`` prints it
and exits before anything is built; every run writes it (atomically) to ``OUTPUT_DIR/run_config.json``
before the model is built.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from llava_vitsplit.presets import train_recipe
from llava_vitsplit.train.arguments import canonical_argument
from llava_vitsplit.train.recipe_args import _flag_parser, stage_from_argv
from llava_vitsplit.util.atomic import write_json

RUN_CONFIG = "run_config.json"
FLAG_ALIASES = {"version": "conv_template"}  # LLaVA's flag name -> the argument it sets
ENV_ARGS = "LLAVA_VITSPLIT_ENV_ARGS"  # "--flag=VARIABLE ..." for the flags a stage script set from variables
BUILD_ARGUMENTS = {  # BuildRecipe field -> the argument that sets it
    "vision_tower": "vision_tower",
    "language_model": "model_name_or_path",
    "connector_type": "connector_type",
    "fusion_output": "fusion_output",
    "vision_feature_layer": "mm_vision_select_layer",
    "image_aspect_ratio": "image_aspect_ratio",
}


def given_flags(argv: list[str]) -> list[str]:
    """The argument names given in ``argv`` (``--name value`` or ``--name=value``), in order."""
    names = [token[2:].split("=", 1)[0] for token in argv if token.startswith("--")]
    return [FLAG_ALIASES.get(name, name) for name in names]


def argument_sources(argv: list[str], environ: dict | None = None) -> dict[str, str]:
    """Argument name -> where its value came from, for the recipe's and the command line's arguments."""
    environ = os.environ if environ is None else environ
    flags, _ = _flag_parser().parse_known_args(argv)
    sources: dict[str, str] = {}
    recipe_name = flags.train_recipe or flags.preset
    if recipe_name:
        stage = stage_from_argv(argv)
        for name in train_recipe(recipe_name, stage):
            sources[canonical_argument(name)] = f"preset recipe {recipe_name} (train.{stage})"
    from_env = dict(item[2:].split("=", 1) for item in environ.get(ENV_ARGS, "").split() if "=" in item)
    from_env = {FLAG_ALIASES.get(name, name): variable for name, variable in from_env.items()}
    for name in given_flags(argv):
        source = f"environment variable {from_env[name]}" if name in from_env else "command line"
        sources[canonical_argument(name)] = source
    if "gradient_accumulation_steps" not in sources and "global_batch_size" in sources:
        sources["gradient_accumulation_steps"] = "derived from --global_batch_size and WORLD_SIZE"
    return sources


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def argument_settings(args_tuple, sources: dict[str, str]) -> dict[str, dict]:
    """``{name: {"value", "source"}}`` for every field of the argument dataclasses."""
    out = {}
    for args in args_tuple:
        for field in dataclasses.fields(args):
            value = getattr(args, field.name)
            out[field.name] = {"value": _jsonable(value), "source": sources.get(field.name, "default")}
    return out


def build_settings(recipe, model_args, sources: dict[str, str], saved: dict) -> dict[str, dict]:
    """The model build's settings: given argument, else the stage-1 connector's, the preset's, default."""
    out = {}
    for field in dataclasses.fields(recipe):
        argument = BUILD_ARGUMENTS.get(field.name, field.name)
        if argument in sources:
            source = sources[argument]
        elif field.name in saved and saved[field.name] is not None:
            source = f"stage-1 connector {model_args.stage1_connector}"
        elif model_args.preset:
            source = f"preset {model_args.preset}"
        else:
            source = "default"
        out[f"model.{field.name}"] = {"value": _jsonable(getattr(recipe, field.name)), "source": source}
    return out


def run_settings(argv, args_tuple, recipe, conv_template: str, sources: dict[str, str] | None = None) -> dict:
    """Everything the run resolved (see the module docstring), as the JSON ``run_config.json`` holds."""
    from llava_vitsplit.train.model_setup import _saved_connector_settings

    model_args = args_tuple[0]
    sources = argument_sources(argv) if sources is None else sources
    settings = argument_settings(args_tuple, sources)
    settings.update(build_settings(recipe, model_args, sources, _saved_connector_settings(model_args)))
    if "conv_template" not in sources:
        where = recipe.base_checkpoint or recipe.language_model
        settings["conv_template"] = {"value": conv_template, "source": f"LLM family of {where}"}
        if conv_template == "plain":
            settings["conv_template"]["source"] = "default (stage 1)"
    else:
        settings["conv_template"] = {"value": conv_template, "source": sources["conv_template"]}
    return {"argv": list(argv), "settings": settings}


def format_settings(config: dict) -> str:
    """One ``name = value    [source]`` line per setting, the non-default ones first."""
    rows = sorted(config["settings"].items(), key=lambda kv: (kv[1]["source"] == "default", kv[0]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}} = {json.dumps(s['value'])}    [{s['source']}]" for name, s in rows)


def write_run_config(out_dir: str | Path, config: dict) -> Path:
    return write_json(Path(out_dir) / RUN_CONFIG, config)


def start_run(argv: list[str], args_tuple, out_dir: Path | None) -> dict:
    """Resolve the run's settings (before the model is built) and write ``run_config.json`` into
    ``out_dir`` (``None``: print nothing, write nothing; the caller prints for ``--print_config``)."""
    from llava_vitsplit.train.model_setup import resolve_build

    recipe, conv_template = resolve_build(*args_tuple)
    config = run_settings(argv, args_tuple, recipe, conv_template)
    if out_dir is not None:
        write_run_config(out_dir, config)
    return config

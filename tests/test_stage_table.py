"""Training stages as data: a stage added in one place trains; ``--stage`` and LLaVA's flags agree or fail
clearly; the adapter flags are ``AdapterConfig``'s fields (a new field is on the command line, the sparse
gate's reach the model config)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import transformers
from _script_runs import SHIPPED_DATA

from llava_vitsplit.adapter import AdapterConfig
from llava_vitsplit.stages import (
    SAVES_CONNECTOR,
    STAGES,
    TrainStage,
    freezing_row,
    register_stage,
    unregister_stage,
)
from llava_vitsplit.testing.tiny_parts import save_tiny_parts, tiny_adapter_args
from llava_vitsplit.train.adapter_args import adapter_arguments, adapter_overrides
from llava_vitsplit.train.arguments import parse_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A connector-only warm-up on instruction data: the LLM stays frozen, text-only samples are kept, the
# LLM's own template renders them, and the connector is saved alone for a later stage 2.
WARMUP = TrainStage(
    name="connector_warmup",
    freezing=freezing_row(language_model=False, lm_head=False),
    saves=SAVES_CONNECTOR,
    needs_images=False,
    records_provenance=True,
    takes_stage1_connector=False,
    template="auto",
)


@pytest.fixture
def warmup_stage():
    register_stage(WARMUP)  # the one place
    yield WARMUP
    unregister_stage(WARMUP.name)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return save_tiny_parts(tmp_path_factory.mktemp("stage_parts"), SHIPPED_DATA)


def argv(parts, out, *extra):
    return [
        "--model_name_or_path", str(parts["llm"]), "--vision_tower", str(parts["vision"]),
        "--data_path", str(SHIPPED_DATA / "finetune.json"), "--image_folder", str(SHIPPED_DATA),
        "--output_dir", str(out), "--report_to", "none", "--per_device_train_batch_size", "4",
        "--dataloader_num_workers", "0", "--use_cpu", "True", "--max_steps", "2", "--save_strategy", "no",
        *tiny_adapter_args(), *extra,
    ]  # fmt: skip


@pytest.mark.e2e
def test_a_stage_added_in_one_place_trains(warmup_stage, parts, tmp_path):
    from llava_vitsplit.train.run import train

    out = tmp_path / "warmup"
    trainer = train(argv(parts, out, "--stage", WARMUP.name))
    model = trainer.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("model.multi_modal_projector.") for name in trainable)
    assert (out / "connector.safetensors").is_file() and not (out / "config.json").exists()
    settings = json.loads((out / "connector_config.json").read_text())
    assert settings["vision_weights_sha256"]  # provenance recorded, as the entry says
    run = json.loads((out / "run_config.json").read_text())["settings"]
    assert run["stage"]["value"] == WARMUP.name and run["conv_template"]["value"] != "plain"
    text_only = sum("image" not in r for r in json.loads((SHIPPED_DATA / "finetune.json").read_text()))
    assert text_only and len(trainer.train_dataset) == 32  # text-only samples kept (needs_images=False)


def stage_of(*extra: str) -> str:
    model_args, _, training_args = parse_args(["--data_path", "d.json", "--report_to", "none", *extra])
    return model_args.stage, training_args.lora_enable


def test_llava_flags_map_to_stages():
    assert stage_of() == ("finetune", False)
    assert stage_of("--tune_mm_mlp_adapter", "True") == ("pretrain", False)
    assert stage_of("--tune_mm_mlp_adapter", "True", "--freeze_backbone", "True") == ("pretrain", False)
    assert stage_of("--lora_enable", "True") == ("finetune_lora", True)
    assert stage_of("--stage", "finetune_lora") == ("finetune_lora", True)
    assert stage_of("--stage", "pretrain", "--tune_mm_mlp_adapter", "True") == ("pretrain", False)
    assert set(STAGES) == {"pretrain", "finetune", "finetune_lora"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stage", "finetune", "--tune_mm_mlp_adapter", "True"], "--stage finetune conflicts with "
         "--tune_mm_mlp_adapter True \\(stage pretrain\\)"),
        (["--tune_mm_mlp_adapter", "True", "--lora_enable", "True"], "select different stages"),
        (["--freeze_backbone", "True"], "freezes the LLM, but stage finetune trains it; .*--stage pretrain"),
        (["--stage", "finetune_lora", "--freeze_backbone", "True"], "stage finetune_lora trains it"),
        (["--stage", "warm"], "unknown stage 'warm'; valid: pretrain, finetune, finetune_lora"),
    ],
)  # fmt: skip
def test_conflicting_stage_flags_are_a_clear_error(flags, message):
    with pytest.raises(ValueError, match=message):
        stage_of(*flags)


def test_a_field_added_to_adapter_config_is_on_the_command_line():
    @dataclass
    class WiderAdapterConfig(AdapterConfig):
        """An adapter with one more setting.

        Attributes:
            fusion_dropout: dropout after the fusion net.
        """

        fusion_dropout: float = 0.0

    arguments = adapter_arguments(WiderAdapterConfig)
    parser = transformers.HfArgumentParser(arguments)
    (args,) = parser.parse_args_into_dataclasses(["--fusion_dropout", "0.1", "--prior_layers", "3,5"])
    assert adapter_overrides(args, WiderAdapterConfig) == {"fusion_dropout": 0.1, "prior_layers": [3, 5]}
    assert "dropout after the fusion net" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--conv_type", "dcn"])  # a Literal field has its choices


def test_the_sparse_gate_is_tuned_from_the_command_line(parts, tmp_path):
    from llava_vitsplit.train.model_setup import setup_model

    args = parse_args(argv(parts, tmp_path, "--prior_selection", "sparse_gate", "--gate_top_k", "1",
                           "--gate_temperature", "0.25"))  # fmt: skip
    model, _, recipe, _ = setup_model(*args)
    assert model.config.adapter["gate_top_k"] == 1 and model.config.adapter["gate_temperature"] == 0.25
    assert recipe.adapter["prior_selection"] == "sparse_gate"

"""The preset's training recipe: it reaches ``TrainingArguments``, the command line overrides it, bad
entries name the preset file and the field, and the stage scripts with no overrides run the recipe."""

from __future__ import annotations

import json

import pytest
from test_script_variables import SCRIPTS, script_command

from llava_vitsplit.presets import PRESET_DIR, get_preset, read_presets, vlm_presets
from llava_vitsplit.presets.train_recipe import check_train_recipe
from llava_vitsplit.train.arguments import canonical_argument, parse_args
from llava_vitsplit.train.recipe_args import accumulation_argv, last_value

STAGE_FLAGS = {
    "pretrain": ["--tune_mm_mlp_adapter", "True"],
    "finetune": [],
    "finetune_lora": ["--lora_enable", "True"],
}
SCRIPT_STAGES = dict(zip(SCRIPTS, STAGE_FLAGS, strict=True))
# The released LLaVA-1.5 + ViT-Split recipe (the stage scripts' defaults before the recipe moved); stage 2
# names no template: the LLM's family decides (vicuna_v1 for Vicuna).
RELEASED = {
    "pretrain": {"learning_rate": 5e-4, "global_batch_size": 256, "per_device_train_batch_size": 32,
                 "gradient_accumulation_steps": 8, "conv_template": "plain"},
    "finetune": {"learning_rate": 2e-5, "global_batch_size": 256, "per_device_train_batch_size": 16,
                 "gradient_accumulation_steps": 16, "conv_template": None, "group_by_modality_length": True},
    "finetune_lora": {"learning_rate": 2e-4, "connector_lr": 2e-5, "global_batch_size": 128,
                      "per_device_train_batch_size": 16, "gradient_accumulation_steps": 8, "lora_r": 128,
                      "lora_alpha": 256, "conv_template": None, "group_by_modality_length": True},
}  # fmt: skip
COMMON = {"num_train_epochs": 1.0, "weight_decay": 0.0, "warmup_steps": 0.03, "lr_scheduler_type": "cosine",
          "model_max_length": 2048}  # fmt: skip


def parsed(*argv: str) -> dict:
    model_args, data_args, training_args = parse_args(["--data_path", "d.json", "--report_to", "none", *argv])
    values = {**vars(model_args), **vars(data_args), **vars(training_args)}
    values["lr_scheduler_type"] = str(training_args.lr_scheduler_type.value)
    return values


@pytest.mark.parametrize("stage", list(STAGE_FLAGS))
def test_released_recipe_reaches_the_training_arguments(stage, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    values = parsed("--preset", "llava-v1.5-7b", *STAGE_FLAGS[stage])
    for name, expected in {**RELEASED[stage], **COMMON}.items():
        assert values[name] == expected, name


def test_command_line_overrides_the_recipe(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    values = parsed(
        "--preset", "llava-v1.5-7b", "--learning_rate", "1e-3", "--per_device_train_batch_size", "4",
        "--version", "chat_template", "--model_max_length", "512",
    )  # fmt: skip
    assert values["learning_rate"] == 1e-3 and values["conv_template"] == "chat_template"
    assert values["model_max_length"] == 512 and values["weight_decay"] == 0.0  # the rest: the recipe
    assert values["gradient_accumulation_steps"] == 256 // (4 * 2)  # the recipe's global batch, WORLD_SIZE 2
    values = parsed("--preset", "llava-v1.5-7b", "--gradient_accumulation_steps", "3")
    assert values["gradient_accumulation_steps"] == 3


def test_another_presets_recipe_and_no_recipe(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    mlp = parsed("--train_recipe", "llava-v1.5-7b-mlp", "--tune_mm_mlp_adapter", "True")
    assert mlp["preset"] is None and mlp["learning_rate"] == 1e-3  # LLaVA-1.5's stage-1 lr
    plain = parsed()  # no preset, no recipe: the dataclass defaults, as before
    assert plain["learning_rate"] == 5e-5 and plain["gradient_accumulation_steps"] == 1
    assert plain["conv_template"] is None and plain["global_batch_size"] is None


def test_global_batch_must_divide_exactly():
    with pytest.raises(ValueError, match="--global_batch_size 10 is not a multiple of .* 4 x 2 processes"):
        accumulation_argv(["--global_batch_size", "10", "--per_device_train_batch_size", "4"], world_size=2)


def test_quickstart_preset_states_what_the_quickstart_runs():
    train = get_preset("quickstart").train
    assert train["pretrain"]["learning_rate"] == 1e-3 and train["finetune"]["learning_rate"] == 1e-4
    assert train["finetune"]["mm_projector_lr"] == 2e-4 and "conv_template" not in train["finetune"]
    assert {s["global_batch_size"] for s in train.values()} == {16}
    assert {s["model_max_length"] for s in train.values()} == {1024}
    assert {s["task_head_lr_multiplier"] for s in train.values()} == {0.1}


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"pretrain": {"learning_rat": 1e-3}}, "unknown field train.pretrain.learning_rat"),
        ({"pretrain": {"learning_rate": "1e-3"}}, r"train.pretrain.learning_rate must be float, got '1e-3'"),
        ({"finetune": {"global_batch_size": 2.5}}, "train.finetune.global_batch_size must be int"),
        ({"finetune": {"lora_r": True}}, "train.finetune.lora_r must be int"),
        ({"stage3": {}}, "unknown stage train.stage3"),
    ],
)
def test_bad_recipe_entries_name_the_file_and_the_field(train, message, tmp_path):
    path = tmp_path / "mine.json"
    with pytest.raises(ValueError, match=message) as err:
        check_train_recipe(train, path)
    assert str(path) in str(err.value)


def test_a_bad_preset_file_fails_when_the_presets_are_read(tmp_path):
    data = json.loads((PRESET_DIR / "quickstart.json").read_text())
    data["train"]["finetune"]["batch"] = 8
    (tmp_path / "broken.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"broken\.json: unknown field train\.finetune\.batch"):
        read_presets(tmp_path)
    data["train"]["finetune"] = {"global_batch_size": 16}
    (tmp_path / "broken.json").write_text(json.dumps(data))
    assert read_presets(tmp_path)["broken"].train["finetune"] == {"global_batch_size": 16}


def test_missing_stage_names_the_preset_file():
    with pytest.raises(KeyError, match=r"quickstart\.json has no training recipe for stage 'finetune_lora'"):
        parsed("--preset", "quickstart", "--lora_enable", "True")


@pytest.mark.parametrize("preset", ["llava-v1.5-7b", "llava-v1.5-7b-mlp", ""])
@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_without_overrides_run_the_recipe(script, preset, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    argv = script_command(script, PRESET=preset, BF16="False", TF32="False")
    recipe = get_preset(preset or "llava-v1.5-7b").train[SCRIPT_STAGES[script]]
    assert not {f"--{name}" for name in recipe} & set(argv)  # nothing overrides the recipe
    deepspeed = last_value(argv, "--deepspeed")
    assert deepspeed == ("./scripts/zero2.json" if script == "pretrain.sh" else "./scripts/zero3.json")
    at = argv.index("--deepspeed")
    values = parsed(*argv[:at], *argv[at + 2 :])  # no DeepSpeed set up in the test process
    for name, expected in recipe.items():
        assert values[canonical_argument(name)] == expected, name  # a recipe may use LLaVA's flag names


def test_every_llava_preset_has_all_three_stages():
    for name, preset in vlm_presets().items():
        expected = {"pretrain", "finetune"} | ({"finetune_lora"} if name != "quickstart" else set())
        assert set(preset.train) == expected, name


def test_conv_template_is_the_name_and_version_its_llava_alias(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert parsed("--conv_template", "plain")["conv_template"] == "plain"
    assert parsed("--version", "plain")["conv_template"] == "plain"  # LLaVA's flag still works
    assert parsed("--version", "plain", "--conv_template", "auto")["conv_template"] == "auto"  # the last wins
    data = json.loads((PRESET_DIR / "quickstart.json").read_text())
    data["train"]["pretrain"]["version"] = data["train"]["pretrain"].pop(
        "conv_template"
    )  # a LLaVA-style recipe
    (tmp_path / "mine.json").write_text(json.dumps(data))
    assert read_presets(tmp_path)["mine"].train["pretrain"]["conv_template"] == "plain"
    data["train"]["pretrain"]["conv_template"] = "plain"
    (tmp_path / "mine.json").write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=r"mine\.json: train\.pretrain sets both conv_template and its alias"
    ):
        read_presets(tmp_path)
    child = {"extends": "llava-v1.5-7b", "train": {"pretrain": {"version": "auto"}}}  # over the parent's
    (tmp_path / "mine.json").write_text(json.dumps(child))
    assert read_presets(tmp_path)["mine"].train["pretrain"]["conv_template"] == "auto"

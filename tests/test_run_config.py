"""``--print_config`` and ``run_config.json``: every resolved setting with the place its value came from."""

from __future__ import annotations

import json

import pytest
from _script_runs import SHIPPED_DATA

from llava_vitsplit.testing.llm_families import save_tiny_family_lm
from llava_vitsplit.testing.tiny import save_tiny_vision_tower
from llava_vitsplit.train.arguments import parse_args
from llava_vitsplit.train.run import train
from llava_vitsplit.train.run_config import ENV_ARGS, RUN_CONFIG, start_run


@pytest.fixture(scope="module")
def qwen3_parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3_parts")
    return save_tiny_vision_tower(root / "vision", "siglip"), save_tiny_family_lm(root / "llm", "qwen3")


def argv_for(parts, out, *extra):
    vision, llm = parts
    return [
        "--preset", "qwen3-8b-siglip", "--model_name_or_path", str(llm), "--vision_tower", str(vision),
        "--data_path", str(SHIPPED_DATA / "finetune.json"), "--image_folder", str(SHIPPED_DATA),
        "--output_dir", str(out), "--report_to", "none", "--learning_rate", "1e-3", *extra,
    ]  # fmt: skip


def test_every_setting_names_its_source(qwen3_parts, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_ARGS, "--learning_rate=LEARNING_RATE --output_dir=OUTPUT_DIR")
    monkeypatch.setenv("WORLD_SIZE", "1")
    argv = argv_for(qwen3_parts, tmp_path / "run", "--num_prior_layers", "2")
    settings = start_run(argv, parse_args(argv), tmp_path)["settings"]
    assert settings["learning_rate"] == {"value": 1e-3, "source": "environment variable LEARNING_RATE"}
    assert settings["weight_decay"]["source"] == "preset recipe qwen3-8b-siglip (train.finetune)"
    assert settings["gradient_accumulation_steps"] == {
        "value": 16, "source": "derived from --global_batch_size and WORLD_SIZE"
    }  # fmt: skip
    assert settings["num_prior_layers"] == {"value": 2, "source": "command line"}
    assert settings["model.adapter"]["source"] == "preset qwen3-8b-siglip"
    assert settings["model.language_model"]["source"] == "command line"
    assert settings["conv_template"] == {"value": "qwen3", "source": f"LLM family of {qwen3_parts[1]}"}
    assert settings["lora_r"] == {"value": 128, "source": "default"}
    assert json.loads((tmp_path / RUN_CONFIG).read_text())["settings"] == settings


def test_print_config_prints_and_builds_nothing(qwen3_parts, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(argv_for(qwen3_parts, out, "--print_config", "True")) is None
    printed = capsys.readouterr().out
    assert (
        '"qwen3"    [LLM family of' in printed
        and "[preset recipe qwen3-8b-siglip (train.finetune)]" in printed
    )
    assert not out.exists()


def test_a_foreign_template_is_refused_before_the_model_is_built(qwen3_parts, tmp_path):
    with pytest.raises(
        ValueError, match=r"--conv_template \(--version\) vicuna_v1 .* but the LLM is a 'qwen3' model"
    ):
        train(argv_for(qwen3_parts, tmp_path / "run", "--version", "vicuna_v1", "--print_config", "True"))

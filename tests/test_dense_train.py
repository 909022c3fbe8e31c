"""End-to-end on CPU: train/resume/evaluate/predict through the console commands, and layer CKA."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _dense_helpers import preset_file, train_argv
from PIL import Image

from llava_vitsplit.cli import main as cli
from llava_vitsplit.dense.checkpoint import checkpoint_steps, load_checkpoint, load_trainer_state
from llava_vitsplit.testing.dense_synthetic import (
    make_coco_set,
    make_depth_set,
    make_segmentation_set,
    tiny_preset,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    """A tiny segmentation model trained for 80 steps; ``(data_root, run_dir, tmp)``."""
    tmp = tmp_path_factory.mktemp("dense_seg")
    root = make_segmentation_set(tmp / "data", n_train=48, n_val=12)
    preset = preset_file(tmp, tiny_preset("segmentation", num_classes=3))
    run = tmp / "run"
    args = train_argv(preset, root, run, "--log-interval", "20", "--save-interval", "40", "--max-iters", "80")
    assert cli(args) == 0
    return root, run, tmp


def test_short_training_run_reaches_high_miou(seg_run):
    root, run, _ = seg_run
    result = json.loads((run / "eval.json").read_text())
    # chance: predicting the majority (background) class everywhere gives mIoU = bg_fraction / 3 < 0.33
    labels = np.stack([np.array(Image.open(p)) for p in sorted((root / "labels" / "val").iterdir())])
    chance = float((labels == 0).mean()) / 3
    assert result["step"] == 80 and result["images"] == 12
    assert result["mIoU"] > 0.6 > chance + 0.25, result
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.7 * losses[0]


def test_checkpoints_are_atomic_and_resume_continues_the_optimizer(seg_run, capsys):
    root, run, tmp = seg_run
    ckpt_dir = run / "checkpoints"
    assert [s for s, _ in checkpoint_steps(ckpt_dir)] == [40, 80]
    assert not [p for p in ckpt_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    payload = load_checkpoint(ckpt_dir)
    assert payload["step"] == 80 and not any(k.startswith("backbone.") for k in payload["model"])
    preset = preset_file(tmp, tiny_preset("segmentation", num_classes=3))
    args = train_argv(preset, root, run, "--max-iters", "84", "--log-interval", "2", "--val-split", "")
    assert cli(args) == 0
    assert "resumed from" in capsys.readouterr().out
    resumed = load_trainer_state(load_checkpoint(ckpt_dir)["path"])
    assert resumed["step"] == 84 and resumed["scheduler"]["last_epoch"] == 84
    adam_steps = {int(s["step"]) for s in resumed["optimizer"]["state"].values()}
    assert adam_steps == {84}
    assert [s for s, _ in checkpoint_steps(ckpt_dir)] == [80, 84]  # keep_checkpoints=2


def test_eval_and_predict_commands(seg_run, tmp_path):
    root, run, tmp = seg_run
    out_json = tmp_path / "metrics.json"
    ckpt = str(run / "checkpoints" / "step-0000080")
    assert cli(["dense-eval", "--checkpoint", ckpt, "--data-root", str(root), "--out", str(out_json)]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["mIoU"] == pytest.approx(json.loads((run / "eval.json").read_text())["mIoU"])
    assert (
        cli(
            [
                "dense-predict",
                "--checkpoint",
                ckpt,
                "--images",
                str(root / "images" / "val"),
                "--out",
                str(tmp_path / "pred"),
            ]
        )
        == 0
    )
    masks = sorted((tmp_path / "pred" / "tiny-segmentation").glob("*.png"))
    assert len(masks) == 12
    mask = Image.open(masks[0])
    assert mask.mode == "P" and mask.size == (64, 64) and set(np.unique(np.array(mask))) <= {0, 1, 2}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli(
            [
                "dense-predict",
                "--checkpoint",
                ckpt,
                "--images",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path),
            ]
        )


def test_depth_training_and_multi_task_prediction(seg_run, tmp_path):
    _, seg_dir, tmp = seg_run
    root = make_depth_set(tmp_path / "depth", n_train=16, n_val=4)
    preset = preset_file(tmp_path, tiny_preset("depth", max_depth=10.0))
    run = tmp_path / "depth_run"
    assert (
        cli(
            train_argv(
                preset, root, run, "--max-iters", "30", "--log-interval", "10", "--schedule", "one_cycle"
            )
        )
        == 0
    )
    result = json.loads((run / "eval.json").read_text())
    assert set(result) >= {"abs_rel", "rmse", "log10", "delta1", "delta2", "delta3"} and result["images"] == 4
    losses = [
        json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    assert len(losses) == 3 and losses[-1] < 0.75 * losses[0]  # SigLoss falls
    # one frozen pass feeds both branches (both runs used the same seeded random backbone)
    out = tmp_path / "multi"
    image = root / "images" / "val" / "0000.png"
    assert (
        cli(
            [
                "dense-predict",
                "--checkpoint",
                str(seg_dir),
                "--checkpoint",
                str(run / "checkpoints"),
                "--images",
                str(image),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "tiny-segmentation" / "0000.png").is_file()
    depth = np.array(Image.open(out / "tiny-depth" / "0000_depth.png"))
    assert depth.dtype == np.uint16 and depth.shape == (64, 64) and 500 < depth.mean() < 10000
    assert Image.open(out / "tiny-depth" / "0000_depth_colour.png").mode == "RGB"


def test_detection_training_and_coco_eval(tmp_path):
    root = make_coco_set(tmp_path / "coco", n_train=4, n_val=2)
    preset = preset_file(tmp_path, tiny_preset("detection", num_classes=3, batch_size=2))
    run = tmp_path / "det_run"
    assert cli(train_argv(preset, root, run, "--max-iters", "2", "--log-interval", "1")) == 0
    result = json.loads((run / "eval.json").read_text())
    assert {"bbox_AP", "segm_AP", "bbox_AP50"} <= set(result) and result["images"] == 2


def test_linear_cka_properties_and_command(tmp_path):
    from llava_vitsplit.dense.cka import linear_cka_matrix

    torch.manual_seed(0)
    x = torch.randn(50, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    cka = linear_cka_matrix([x, 3 * x @ q + 1, torch.randn(50, 8), x[:, :4]])
    assert torch.allclose(cka.diag(), torch.ones(4, dtype=torch.float64))
    assert cka[0, 1] == pytest.approx(1.0)  # invariant to rotation, scale and shift
    assert cka[0, 2] < 0.5 and torch.allclose(cka, cka.T)
    wide = linear_cka_matrix([x.T, (x @ q).T])  # N < C: Gram form
    assert 0 <= float(wide[0, 1]) <= 1

    images = make_segmentation_set(tmp_path / "imgs", n_train=4, n_val=0)
    config = tmp_path / "backbone.json"
    config.write_text(json.dumps(tiny_preset().backbone))
    assert (
        cli(
            [
                "cka",
                "--backbone",
                str(config),
                "--images",
                str(images / "images" / "train"),
                "--out",
                str(tmp_path / "cka"),
                "--size",
                "32",
                "--tokens-per-image",
                "8",
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "cka" / "cka.json").read_text())
    assert data["layers"] == ["embed", "block0", "block1", "block2", "block3"]
    matrix = np.array(data["cka"])
    assert matrix.shape == (5, 5) and np.allclose(np.diag(matrix), 1) and (matrix >= -1e-9).all()
    assert Image.open(tmp_path / "cka" / "cka.png").size[0] > 100

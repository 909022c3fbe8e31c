"""Bad dense data is found before training: every kind listed with its file, each file opened once."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from _dense_helpers import preset_file, train_argv
from PIL import Image, ImageFile

from llava_vitsplit.cli import main as cli
from llava_vitsplit.testing.dense_synthetic import (
    make_coco_set,
    make_depth_set,
    make_segmentation_set,
    tiny_preset,
)


@pytest.fixture(autouse=True)
def _lenient_pil(monkeypatch):
    """PIL's process-wide truncation leniency on, as lmms-eval leaves it after import: still an error here."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)


def _corrupt(path) -> None:
    path.write_bytes(path.read_bytes()[:60])  # a truncated PNG


def _bad_segmentation_set(root):
    """The shapes set with one sample of each segmentation problem; ``{kind: offending file}``."""
    make_segmentation_set(root, n_train=10, n_val=2)
    labels, images = root / "labels" / "train", root / "images" / "train"
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(labels / "0000.png")
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(labels / "0001.png")
    _corrupt(images / "0002.png")
    (labels / "0003.png").unlink()
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(labels / "0004.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(labels / "0005.png")
    return {
        "size-mismatch": labels / "0000.png",
        "class-id": labels / "0001.png",
        "unreadable": images / "0002.png",
        "missing-pair": labels / "0003.png",
        "empty-label": labels / "0004.png",
        "wrong-mode": labels / "0005.png",
    }


def _problem_lines(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line and not line.startswith("split ")}


@pytest.fixture
def count_opens(monkeypatch):
    """How often each file was opened by PIL (thread-safe)."""
    opened: dict[str, int] = {}
    lock, real_open = threading.Lock(), Image.open

    def counting_open(fp, *args, **kwargs):
        with lock:
            opened[str(fp)] = opened.get(str(fp), 0) + 1
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return opened


def test_segmentation_problems_each_listed_with_its_file(tmp_path, capsys, count_opens):
    root = tmp_path / "seg"
    bad = _bad_segmentation_set(root)
    preset = preset_file(tmp_path, tiny_preset())
    assert cli(["dense-validate", "--preset", preset, "--data-root", str(root), "--workers", "3"]) == 1
    out = capsys.readouterr().out
    lines = _problem_lines(out)
    assert set(lines) == set(bad), out
    for kind, path in bad.items():
        assert str(path) in lines[kind], lines[kind]
    assert "10 sample(s) checked, 6 problem(s) in 6 sample(s)" in out
    report = tmp_path / "report.json"
    assert (
        cli(
            [
                "dense-validate",
                "--preset",
                preset,
                "--data-root",
                str(root),
                "--split",
                "val",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    assert json.loads(report.read_text())[0]["problems"] == []
    files = [p for p in (root / "images" / "train").iterdir() if p.name != "0003.png"]  # 0003: no pair
    files += list((root / "labels" / "train").iterdir())
    assert {str(p): 1 for p in files} == {p: n for p, n in count_opens.items() if "/train/" in p}


def test_depth_and_coco_problems(tmp_path, capsys):
    depth = make_depth_set(tmp_path / "depth", n_train=4, n_val=1)
    maps = depth / "depths" / "train"
    Image.fromarray(np.full((64, 64), 80, np.uint8)).save(maps / "0000.png")  # 8-bit
    Image.fromarray(np.zeros((64, 64), np.uint16)).save(maps / "0001.png")
    Image.fromarray(np.full((40, 64), 3000, np.uint16)).save(maps / "0002.png")
    preset = preset_file(tmp_path, tiny_preset("depth"))
    assert cli(["dense-validate", "--preset", preset, "--data-root", str(depth)]) == 1
    lines = _problem_lines(capsys.readouterr().out)
    assert set(lines) == {"bit-depth", "all-zero-depth", "size-mismatch"}
    assert str(maps / "0000.png") in lines["bit-depth"] and str(maps / "0001.png") in lines["all-zero-depth"]
    assert str(maps / "0002.png") in lines["size-mismatch"]

    coco = make_coco_set(tmp_path / "coco", n_train=4, n_val=1)
    ann_file = coco / "annotations" / "instances_train.json"
    data = json.loads(ann_file.read_text())
    (coco / "train" / "000001.png").unlink()
    _corrupt(coco / "train" / "000002.png")
    data["annotations"][4]["segmentation"] = [[5.0, 5.0, 5.0, 5.0, 5.0, 5.0]]  # image 3: zero area
    data["annotations"][7]["category_id"] = 9  # image 4
    ann_file.write_text(json.dumps(data))
    preset = preset_file(tmp_path, tiny_preset("detection", num_classes=3))
    assert cli(["dense-validate", "--preset", preset, "--data-root", str(coco)]) == 1
    lines = _problem_lines(capsys.readouterr().out)
    assert set(lines) == {"missing-image", "unreadable", "empty-mask", "class-id"}
    assert "000001.png" in lines["missing-image"] and "000002.png" in lines["unreadable"]
    assert "000003.png" in lines["empty-mask"] and "category 9 outside 1..2" in lines["class-id"]


def test_training_stops_before_step_one_or_skips_and_counts(tmp_path, capsys, monkeypatch):
    torch.set_num_threads(1)
    root = tmp_path / "seg"
    bad = _bad_segmentation_set(root)
    preset = preset_file(tmp_path, tiny_preset(batch_size=2))
    run = tmp_path / "run"
    argv = train_argv(preset, root, run, "--max-iters", "2", "--log-interval", "1")
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert all(str(path) in err for path in bad.values()) and "--skip-bad-samples" in err
    assert not (run / "log.jsonl").exists() and not (run / "checkpoints").exists()

    assert cli([*argv, "--skip-bad-samples"]) == 0
    out = capsys.readouterr().out
    assert "leaving out 6 sample(s)" in out and '"step": 2' in out

    from llava_vitsplit.dense import validate

    def no_rescan(*args, **kwargs):
        raise AssertionError("the unchanged split was checked again instead of using the cache")

    monkeypatch.setattr(validate, "_validate_files", no_rescan)
    assert cli([*argv, "--skip-bad-samples", "--no-resume"]) == 0
    monkeypatch.undo()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(bad["size-mismatch"])  # fixed: the cache is stale
    assert cli([*argv, "--skip-bad-samples", "--no-resume"]) == 0
    assert "leaving out 5 sample(s)" in capsys.readouterr().out


def test_predict_skips_an_unreadable_photo_and_writes_the_others(tmp_path, capsys):
    torch.set_num_threads(1)
    root = make_segmentation_set(tmp_path / "seg", n_train=4, n_val=3)
    preset = preset_file(tmp_path, tiny_preset(batch_size=2))
    run = tmp_path / "run"
    assert cli(train_argv(preset, root, run, "--max-iters", "1", "--val-split", "")) == 0
    photos = root / "images" / "val"
    _corrupt(photos / "0001.png")
    out = tmp_path / "pred"
    assert cli(["dense-predict", "--checkpoint", str(run), "--images", str(photos), "--out", str(out)]) == 1
    assert str(photos / "0001.png") in capsys.readouterr().err
    assert sorted(p.name for p in (out / "tiny-segmentation").iterdir()) == ["0000.png", "0002.png"]

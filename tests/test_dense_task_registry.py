"""The dense task registry: a new task is one ``DenseTaskSpec`` entry plus its head module.

The ``edges`` task below (a 1x1-conv head predicting label boundaries of the generated shapes set, with
BCE, an F1 metric and a PNG writer) is defined here only: registering it makes ``dense-train``,
``dense-eval``, ``dense-predict`` and ``dense-validate`` work with it through their real code paths,
including multi-task prediction next to a segmentation branch on the same frozen pass.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from _dense_helpers import log_records, preset_file, train_argv
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from llava_vitsplit.cli import main as cli
from llava_vitsplit.dense.checkpoint import load_checkpoint
from llava_vitsplit.dense.param_report import dense_param_report
from llava_vitsplit.dense.presets import dense_presets
from llava_vitsplit.dense.tasks import TASKS, BranchHead, DenseTaskSpec, collate_items, task_spec
from llava_vitsplit.dense.tasks.segmentation import segmentation_dataset, segmentation_split
from llava_vitsplit.testing.dense_synthetic import make_segmentation_set, tiny_preset


class EdgeHead(nn.Module):
    """``[B, C, h, w] -> [B, 1, h, w]`` boundary logits (the branch resizes them to the input)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.predict = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(x)


def label_edges(labels: torch.Tensor) -> torch.Tensor:
    """1.0 where a pixel's class differs from its right or lower neighbour: ``[H, W] -> [H, W]``."""
    edges = torch.zeros(labels.shape, dtype=torch.bool)
    edges[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edges[:-1, :] |= labels[1:, :] != labels[:-1, :]
    return edges.float()


class EdgeItems(Dataset):
    """Segmentation items with their label replaced by its boundary map ``edges [H, W]``."""

    def __init__(self, segmentation: Dataset) -> None:
        self.segmentation = segmentation

    def __len__(self) -> int:
        return len(self.segmentation)

    def __getitem__(self, index: int) -> dict:
        item = self.segmentation[index]
        return {
            "pixel_values": item["pixel_values"],
            "edges": label_edges(item["labels"]),
            "path": item["path"],
        }


class EdgeF1:
    """F1 and pixel accuracy of ``logits [1, H, W] > 0`` against ``edges [H, W]``."""

    def __init__(self, preset) -> None:
        self.tp = self.fp = self.fn = self.correct = self.pixels = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        hit, truth = pred[0] > 0, target > 0.5
        self.tp += int((hit & truth).sum())
        self.fp += int((hit & ~truth).sum())
        self.fn += int((~hit & truth).sum())
        self.correct += int((hit == truth).sum())
        self.pixels += truth.numel()

    def compute(self) -> dict:
        return {
            "edge_f1": 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1),
            "edge_accuracy": self.correct / max(self.pixels, 1),
        }


def write_edges(pred: torch.Tensor, preset, folder, stem: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((pred[0] > 0).cpu().numpy() * 255).astype(np.uint8)).save(folder / f"{stem}_edges.png")


EDGES = DenseTaskSpec(
    name="edges",
    dataset=lambda *args: EdgeItems(segmentation_dataset(*args)),
    collate=collate_items,
    split_files=segmentation_split,
    branch=BranchHead(
        head=lambda preset, channels: EdgeHead(channels),
        target="edges",
        loss=lambda pred, edges, preset: F.binary_cross_entropy_with_logits(pred[:, 0].float(), edges),
        metric=EdgeF1,
        write=write_edges,
    ),
)


@pytest.fixture
def edges_task():
    """``EDGES`` registered for the test, removed afterwards."""
    TASKS[EDGES.name] = EDGES
    yield EDGES
    del TASKS[EDGES.name]


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_a_task_added_in_one_place_trains_evaluates_validates_and_predicts(edges_task, one_thread, tmp_path):
    root = make_segmentation_set(tmp_path / "shapes", n_train=8, n_val=3)
    edges = preset_file(tmp_path, tiny_preset("edges", batch_size=4))
    run = tmp_path / "edges_run"
    argv = train_argv(edges, root, run, "--max-iters", "3", "--log-interval", "1", "--eval-interval", "2")
    assert cli(argv) == 0

    records = log_records(run)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    evals = [r for r in records if "eval" in r]
    assert [r["step"] for r in evals] == [2, 3]
    assert all(set(r["eval"]) == {"edge_f1", "edge_accuracy", "images"} for r in evals)
    final = json.loads((run / "eval.json").read_text())
    assert final["step"] == 3 and final["images"] == 3 and 0.0 <= final["edge_f1"] <= 1.0
    weights = load_checkpoint(run)["model"]
    assert "branches.tiny-edges.head.predict.weight" in weights
    assert not any(k.startswith("backbone.") for k in weights)  # the frozen tower is left out

    metrics = tmp_path / "eval.json"
    assert cli(["dense-eval", "--checkpoint", str(run), "--data-root", str(root), "--out", str(metrics)]) == 0
    evaluated = json.loads(metrics.read_text())
    assert evaluated["preset"] == "tiny-edges" and evaluated["images"] == 3
    assert evaluated["edge_f1"] == pytest.approx(final["edge_f1"], abs=1e-6)
    assert evaluated["edge_accuracy"] == pytest.approx(final["edge_accuracy"], abs=1e-6)

    assert cli(["dense-validate", "--preset", edges, "--data-root", str(root), "--split", "val"]) == 0

    # next to a segmentation branch trained on the same seeded random tower: one frozen pass feeds both
    segmentation = preset_file(tmp_path, tiny_preset("segmentation", batch_size=4))
    seg_run = tmp_path / "seg_run"
    assert cli(train_argv(segmentation, root, seg_run, "--max-iters", "1", "--val-split", "")) == 0
    out = tmp_path / "pred"
    photos = root / "images" / "val"
    predict = ["dense-predict", "--checkpoint", str(run), "--checkpoint", str(seg_run)]
    assert cli([*predict, "--images", str(photos), "--out", str(out)]) == 0
    written = sorted(p.name for p in (out / "tiny-edges").iterdir())
    assert written == ["0000_edges.png", "0001_edges.png", "0002_edges.png"]
    edge_map = np.array(Image.open(out / "tiny-edges" / "0000_edges.png"))
    assert edge_map.shape == (64, 64) and set(np.unique(edge_map)) <= {0, 255}
    assert (out / "tiny-segmentation" / "0000.png").is_file()


def test_an_unknown_task_is_refused_naming_the_preset_and_the_valid_tasks(tmp_path, capsys):
    preset = tiny_preset("edges")
    assert "edges" not in TASKS
    with pytest.raises(ValueError, match=r"preset 'tiny-edges': unknown dense task 'edges'; valid: "):
        task_spec(preset)
    with pytest.raises(ValueError, match=r"valid: segmentation, depth, detection$"):
        task_spec(preset)
    root = make_segmentation_set(tmp_path / "shapes", n_train=2, n_val=1)
    with pytest.raises(ValueError, match="unknown dense task 'edges'"):
        cli(train_argv(preset_file(tmp_path, preset), root, tmp_path / "run", "--max-iters", "1"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_spec_is_a_branch_or_has_its_own_model_and_class_counts_are_checked():
    with pytest.raises(ValueError, match="exactly one of branch= or own_model="):
        DenseTaskSpec(
            name="neither", dataset=EDGES.dataset, collate=collate_items, split_files=segmentation_split
        )
    with pytest.raises(ValueError, match="a segmentation preset needs num_classes >= 1"):
        task_spec(tiny_preset("segmentation", num_classes=0))
    assert task_spec(tiny_preset("depth")) is TASKS["depth"]


# sha256 of the presets and of their parameter reports, taken from the code before the task registry
PRESETS_SHA256 = "fbf8033ebcf5bdef0ecd9890df4f0c579c6bf99f9a3fe0ee0d94e2445d6b6a94"
PARAM_REPORTS_SHA256 = "d731485a112b11e6da307b399128bb375ed812b21552fc0bc2e719a5a183ef7f"


def test_presets_and_their_parameter_reports_are_unchanged():
    presets = dense_presets()
    blob = json.dumps([[name, preset.to_dict()] for name, preset in presets.items()])
    assert hashlib.sha256(blob.encode()).hexdigest() == PRESETS_SHA256
    reports = json.dumps([[name, dense_param_report(name)] for name in presets])
    assert hashlib.sha256(reports.encode()).hexdigest() == PARAM_REPORTS_SHA256

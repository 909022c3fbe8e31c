"""Dense data: standard layouts, clear errors on bad inputs, transforms, metrics and sliding windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from llava_vitsplit.dense.data import (
    DepthDataset,
    SegmentationDataset,
    coco_dataset,
    depth_pairs,
    load_label,
    segmentation_pairs,
)
from llava_vitsplit.dense.inference import slide_inference
from llava_vitsplit.dense.metrics import DepthMetric, SegmentationMetric
from llava_vitsplit.dense.pipeline import build_dataset
from llava_vitsplit.testing.dense_synthetic import make_coco_set, make_segmentation_set, tiny_preset


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _ade(root, label: np.ndarray, image_hw=(20, 30)):
    _save(root / "images" / "training" / "a.jpg", np.zeros((*image_hw, 3), np.uint8))
    _save(root / "annotations" / "training" / "a.png", label)
    return root


def test_ade20k_layout_reduces_zero_label(tmp_path):
    label = np.zeros((20, 30), np.uint8)
    label[:5] = 1
    label[5:10] = 150
    root = _ade(tmp_path, label)
    pairs = segmentation_pairs(root, "ade20k", "train")
    item = SegmentationDataset(pairs, 150, reduce_zero_label=True)[0]
    assert item["pixel_values"].shape == (3, 20, 30)
    labels = item["labels"]
    assert labels[0, 0] == 0 and labels[6, 0] == 149 and labels[-1, 0] == 255


def test_cityscapes_and_nyu_layouts(tmp_path):
    city = tmp_path / "city"
    _save(city / "leftImg8bit" / "val" / "ulm" / "ulm_01_leftImg8bit.png", np.zeros((8, 8, 3), np.uint8))
    _save(city / "gtFine" / "val" / "ulm" / "ulm_01_gtFine_labelTrainIds.png", np.full((8, 8), 18, np.uint8))
    ((image, label),) = segmentation_pairs(city, "cityscapes", "val")
    assert label.name == "ulm_01_gtFine_labelTrainIds.png"
    nyu = tmp_path / "nyu"
    _save(nyu / "bath" / "rgb_1.jpg", np.zeros((6, 8, 3), np.uint8))
    _save(nyu / "bath" / "depth_1.png", np.full((6, 8), 2500, np.uint16))
    (nyu / "nyu_test.txt").write_text("/bath/rgb_1.jpg /bath/depth_1.png 518.8579\n")
    item = DepthDataset(depth_pairs(nyu, "nyu", "test"))[0]
    assert torch.allclose(item["depth"], torch.full((6, 8), 2.5))


def test_label_of_wrong_size_names_both_files(tmp_path):
    root = _ade(tmp_path, np.ones((10, 30), np.uint8))
    dataset = SegmentationDataset(segmentation_pairs(root, "ade20k", "train"), 150, reduce_zero_label=True)
    with pytest.raises(
        ValueError, match=r"annotations/training/a\.png is 30x10 but its image .*a\.jpg is 30x20"
    ):
        dataset[0]


def test_unknown_class_ids_are_reported(tmp_path):
    label = np.zeros((4, 4), np.uint8)
    label[0, 0] = 7
    label[1, 1] = 200
    _save(tmp_path / "l.png", label)
    with pytest.raises(
        ValueError, match=r"l\.png has unknown class id\(s\) \[7, 200\]: valid are 0\.\.4 and 255"
    ):
        load_label(tmp_path / "l.png", num_classes=5)
    _save(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="single-channel"):
        load_label(tmp_path / "rgb.png", num_classes=5)


def test_missing_files_give_clear_errors(tmp_path):
    root = make_segmentation_set(tmp_path / "seg", n_train=2, n_val=1)
    (root / "labels" / "train" / "0001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing label file .*labels/train/0001\.png for image"):
        segmentation_pairs(root, "folder", "train")
    with pytest.raises(FileNotFoundError, match=r"image folder .*images/test does not exist"):
        segmentation_pairs(root, "folder", "test")
    with pytest.raises(ValueError, match="unknown segmentation layout 'voc'"):
        segmentation_pairs(root, "voc", "val")
    (tmp_path / "nyu").mkdir()
    (tmp_path / "nyu" / "train.txt").write_text("a.jpg b.png\n")
    with pytest.raises(FileNotFoundError, match=r"missing file .*a\.jpg listed in .*train\.txt:1"):
        depth_pairs(tmp_path / "nyu", "nyu", "train")
    coco = make_coco_set(tmp_path / "coco", n_train=2, n_val=1)
    (coco / "train" / "000002.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"1 image\(s\) listed in .*instances_train\.json are missing"
    ):
        coco_dataset(coco / "train", coco / "annotations" / "instances_train.json")


def test_train_transform_crops_and_pads_with_ignore_index(tmp_path):
    root = make_segmentation_set(tmp_path / "seg", n_train=1, n_val=1, size=40)
    preset = tiny_preset(crop_size=(48, 56), test_size=None)
    item = build_dataset(preset, root, "train", train=True)[0]
    assert item["pixel_values"].shape == (3, 48, 56) and item["pixel_values"].dtype == torch.float32
    assert item["labels"].shape == (48, 56)
    assert set(item["labels"].unique().tolist()) <= {0, 1, 2, 255} and 255 in item["labels"].unique()
    val = build_dataset(tiny_preset(test_size=(20, 20)), root, "val", train=False)[0]
    assert val["pixel_values"].shape == (3, 20, 20) and val["labels"].shape == (
        40,
        40,
    )  # labels stay full size


def test_miou_with_ignore_index_and_absent_classes():
    metric = SegmentationMetric(num_classes=4, ignore_index=255)
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 3]])
    metric.update(pred, label)
    result = metric.compute()
    # class 0: tp 1, union 3; class 1: tp 2, union 3; class 2: tp 1, union 2; class 3: never seen (ignored pixels)
    assert result["IoU"][:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and result["IoU"][3] is None
    assert result["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert result["aAcc"] == pytest.approx(4 / 6)


def test_depth_metrics():
    metric = DepthMetric(min_depth=1e-3, max_depth=10.0)
    gt = torch.tensor([[1.0, 2.0], [4.0, 0.0]])  # 0 = invalid
    metric.update(gt.clone(), gt)
    metric.update(gt * 2, gt)
    result = metric.compute()
    assert result["abs_rel"] == pytest.approx(0.5)  # (0 + 1) / 2
    assert result["delta1"] == pytest.approx(0.5) and result["delta3"] == pytest.approx(0.5)
    assert result["log10"] == pytest.approx(np.log10(2) / 2)
    assert result["rmse"] == pytest.approx(np.sqrt((1 + 4 + 16) / 3) / 2)


def test_sliding_window_matches_whole_image_for_a_local_predictor():
    conv = torch.nn.Conv2d(3, 2, kernel_size=1)
    image = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        whole = conv(image)
        slid = slide_inference(conv, image, crop=(16, 16), stride=(11, 10))
    torch.testing.assert_close(slid, whole)


def test_preset_json_round_trip_and_unknown_fields(tmp_path):
    from llava_vitsplit.dense.presets import DensePreset, load_preset

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_preset().to_dict()))
    assert load_preset(str(path)) == tiny_preset()
    with pytest.raises(ValueError, match="unknown dense preset field"):
        DensePreset.from_dict({**tiny_preset().to_dict(), "lr_mult": 2})


def test_depth_evaluation_uses_the_eigen_crop():
    from llava_vitsplit.dense.evaluation import evaluate_dense

    gt = torch.full((480, 640), 3.0)

    class Model(torch.nn.Module):  # exact inside NYU's Eigen crop, 2x too far outside it
        def forward(self, pixels):
            pred = torch.full((1, 1, 480, 640), 6.0)
            pred[..., 45:471, 41:601] = 3.0
            return {"nyu": pred}

    dataset = [{"pixel_values": torch.zeros(3, 480, 640), "depth": gt}]
    preset = tiny_preset("depth", name="nyu", test_size=None, eval_crop=(45, 471, 41, 601))
    assert evaluate_dense(Model(), preset, dataset, torch.device("cpu"))["abs_rel"] == pytest.approx(0.0)
    uncropped = evaluate_dense(Model(), preset.replace(eval_crop=None), dataset, torch.device("cpu"))
    assert uncropped["abs_rel"] > 0.1

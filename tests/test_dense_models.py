"""Dense heads and models: shapes, multi-task single pass, gradients, SigLoss, Mask R-CNN with our neck, presets."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from llava_vitsplit.dense.build import build_backbone, build_dense_model, build_detector
from llava_vitsplit.dense.losses import sig_loss
from llava_vitsplit.dense.param_report import dense_param_report
from llava_vitsplit.dense.presets import dense_presets, get_dense_preset
from llava_vitsplit.testing.dense_synthetic import make_coco_set, tiny_preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_model(*presets):
    torch.manual_seed(0)
    backbone = build_backbone(presets[0].backbone)
    return build_dense_model(list(presets), backbone)


def test_segmentation_and_depth_shapes_on_odd_sizes():
    seg, depth = tiny_preset("segmentation", num_classes=5), tiny_preset("depth")
    model = _tiny_model(seg, depth)
    out = model(torch.randn(2, 3, 45, 61))
    assert out[seg.name].shape == (2, 5, 45, 61)
    assert out[depth.name].shape == (2, 1, 45, 61)
    assert bool((out[depth.name] >= depth.min_depth).all())


def test_multi_task_runs_the_frozen_backbone_once_and_only_heads_get_gradients():
    seg, depth = tiny_preset("segmentation"), tiny_preset("depth")
    model = _tiny_model(seg, depth).train()
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    out = model(torch.randn(2, 3, 32, 32))
    assert len(calls) == 1
    (out[seg.name].mean() + out[depth.name].mean()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    for branch in model.branches.values():
        assert branch.adapter.task_head.blocks[0].mlp.fc1.weight.grad is not None
        assert branch.adapter.prior_head.reduce.weight.grad is not None
        assert not model.backbone.training  # frozen tower stays in eval under model.train()


def test_sig_loss_is_zero_for_exact_depth_and_ignores_invalid_pixels():
    target = torch.rand(2, 1, 8, 8) * 5 + 0.5
    target[0, 0, :2] = 0.0  # invalid
    pred = target.clone()
    pred[0, 0, :2] = 100.0  # wrong where invalid: ignored
    assert float(sig_loss(pred, target)) < 1e-2
    assert float(sig_loss(pred * 1.5, target)) > 0.05
    assert float(sig_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))) == 0.0


def test_mask_rcnn_forward_backward_with_vitsplit_neck(tmp_path):
    from llava_vitsplit.dense.metrics import coco_ap, coco_results
    from llava_vitsplit.dense.pipeline import build_dataset, collate

    root = make_coco_set(tmp_path / "coco", n_train=4, n_val=2)
    preset = tiny_preset("detection", num_classes=3)
    torch.manual_seed(0)
    model = build_detector(preset, build_backbone(preset.backbone)).train()
    dataset = build_dataset(preset, root, "train", train=True)
    images, targets = next(iter(DataLoader(dataset, batch_size=2, collate_fn=collate)))
    assert targets[0]["masks"].shape[-2:] == images[0].shape[-2:]
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} <= set(
        losses
    )
    sum(losses.values()).backward()
    det_backbone = model.backbone
    assert det_backbone.adapter.fusion.reduce.weight.grad is not None
    assert det_backbone.neck.fpn.inner_blocks[0][0].weight.grad is not None
    assert all(p.grad is None for p in det_backbone.backbone.parameters())
    features = det_backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    model.eval()
    val = build_dataset(preset, root, "val", train=False)
    image, target = val[0]
    with torch.no_grad():
        out = model([image])
    metrics = coco_ap(val.coco, coco_results(out, [int(target["image_id"])]))
    assert set(metrics) >= {"bbox_AP", "segm_AP"} and all(-1.0 <= v <= 1.0 for v in metrics.values())


@pytest.mark.parametrize(
    ("name", "millions", "exact"),
    [
        ("dense-ade20k-s", "10.2", 10_230_330),
        ("dense-ade20k-b", "40.5", 40_514_490),
        ("dense-ade20k-l", "88.6", 88_637_626),
        ("dense-nyu-s", "9.3", 9_335_397),
        ("dense-nyu-b", "37.0", 36_954_405),
        ("dense-nyu-l", "65.5", 65_525_157),
    ],
)
def test_preset_trainable_parameters_match_the_paper(name, millions, exact):
    report = dense_param_report(name)
    trainable = report["total"]["trainable"]
    assert f"{trainable / 1e6:.1f}" == millions
    assert trainable == exact  # 3 blocks of 12C^2+15C + prior + fusion (DCNv1) + head, by hand
    assert report["backbone"]["trainable"] == 0 and report["backbone"]["frozen"] > 0


def test_preset_lookup_and_components():
    presets = dense_presets()
    for size in "sbl":
        for dataset in ("ade20k", "cityscapes", "pascal-context", "nyu", "coco"):
            assert f"dense-{dataset}-{size}" in presets
    assert get_dense_preset("dense-ade20k-l").adapter["prior_layers"] == [2, 5, 8, 11, 14, 17, 20, 23]
    assert get_dense_preset("dense-nyu-l").adapter["prior_layers"] == [6, 11, 17, 23]
    with pytest.raises(KeyError, match="dense-ade20k-s"):
        get_dense_preset("dense-ade21k-s")
    s = dense_param_report("dense-ade20k-s")
    assert s["task_head"]["trainable"] == 3 * (12 * 384**2 + 15 * 384)
    assert s["head"]["trainable"] == 2 * (384 * 384 * 4 + 384 + 2 * 384) + 2 * 384 + 384 * 150 + 150
    coco = dense_param_report("dense-coco-s")
    assert coco["detector"]["trainable"] > 0 and coco["backbone"]["frozen"] == s["backbone"]["frozen"]

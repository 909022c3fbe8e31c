"""Dense input normalisation follows the backbone: each family's mean/std (or the checkpoint's own
preprocessor config), the same in training, evaluation, prediction, Mask R-CNN and CKA, and recorded in
the dense checkpoint. Expected values are written out here, independent of the library's tables.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from _dense_helpers import preset_file, train_argv
from PIL import Image

from llava_vitsplit.cli import main as cli
from llava_vitsplit.dense.build import build_backbone, build_detector
from llava_vitsplit.dense.pipeline import build_dataset
from llava_vitsplit.testing.dense_synthetic import make_depth_set, make_segmentation_set, tiny_preset

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CUSTOM = ((0.3, 0.4, 0.5), (0.2, 0.25, 0.3))  # a checkpoint's own preprocessor_config.json
RECORDED = ((0.6, 0.2, 0.1), (0.1, 0.15, 0.4))  # written into checkpoint.json by hand

TINY_SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
TOWERS = {
    "clip": ({**TINY_SHAPE, "model_type": "clip_vision_model"}, OPENAI_CLIP),
    "siglip": ({**TINY_SHAPE, "model_type": "siglip_vision_model"}, HALF),
    "dinov2": (None, IMAGENET),  # tiny_preset's own DINOv2: unchanged
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _preset(task: str, tower: str, **changes):
    backbone, _ = TOWERS[tower]
    preset = tiny_preset(task, **changes)
    return preset if backbone is None else preset.replace(backbone=backbone)


def _same(got, expected) -> bool:
    """``(mean, std)`` pairs equal to float precision."""
    return np.allclose(np.array(got, dtype=float), np.array(expected, dtype=float), rtol=1e-6, atol=1e-7)


def _normalised(path, normalization) -> torch.Tensor:
    """``[3, H, W]``: the image in [0, 1], minus ``mean``, over ``std`` (per channel)."""
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in normalization)
    pixels = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    return (pixels - mean) / std


def _pair_set(task: str, tmp_path):
    if task == "segmentation":
        return make_segmentation_set(tmp_path / task, n_train=2, n_val=2)
    return make_depth_set(tmp_path / task, n_train=2, n_val=2)


@pytest.mark.parametrize("task", ["segmentation", "depth"])
@pytest.mark.parametrize("tower", list(TOWERS))
def test_pair_datasets_normalise_with_the_towers_mean_and_std(tower, task, tmp_path):
    root = _pair_set(task, tmp_path)
    preset = _preset(task, tower, num_classes=3 if task == "segmentation" else 0)
    expected = TOWERS[tower][1]
    val = build_dataset(preset, root, "val", train=False)
    item = val[0]
    torch.testing.assert_close(
        item["pixel_values"].as_subclass(torch.Tensor), _normalised(item["path"], expected)
    )
    # training flips and colour-jitters uint8 images: undoing the tower's normalisation must land on
    # the 1/255 grid inside [0, 1] (another mean/std lands off it)
    torch.manual_seed(0)
    pixels = build_dataset(preset, root, "train", train=True)[0]["pixel_values"].as_subclass(torch.Tensor)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in expected)
    levels = (pixels * std + mean) * 255  # [3, H, W]
    assert levels.min() > -1e-3 and levels.max() < 255 + 1e-3
    assert (levels - levels.round()).abs().max() < 1e-3


@pytest.mark.parametrize("tower", list(TOWERS))
def test_mask_rcnn_normalises_with_the_towers_mean_and_std(tower):
    preset = _preset("detection", tower)
    model = build_detector(preset, build_backbone(preset.backbone))
    mean, std = TOWERS[tower][1]
    assert model.transform.image_mean == pytest.approx(list(mean))
    assert model.transform.image_std == pytest.approx(list(std))


def _save_tiny_clip(folder, preprocessor: tuple | None):
    """A transformers CLIP vision checkpoint folder, with a ``preprocessor_config.json`` if given."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = {k: v for k, v in TOWERS["clip"][0].items() if k != "model_type"}
    CLIPVisionModel(CLIPVisionConfig(**config)).save_pretrained(folder)
    if preprocessor is not None:
        mean, std = preprocessor
        processor = {"image_processor_type": "CLIPImageProcessor", "image_mean": mean, "image_std": std}
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def test_a_checkpoints_preprocessor_config_wins_over_the_family_default(tmp_path):
    from llava_vitsplit.backbones.normalization import backbone_normalization

    spec = TOWERS["clip"][0]
    own = _save_tiny_clip(tmp_path / "own", CUSTOM)
    plain = _save_tiny_clip(tmp_path / "plain", None)
    assert _same(backbone_normalization(spec, own).as_tuple(), CUSTOM)
    assert _same(backbone_normalization(spec, plain).as_tuple(), OPENAI_CLIP)
    assert _same(backbone_normalization(spec).as_tuple(), OPENAI_CLIP)
    assert _same(backbone_normalization("dinov2-small").as_tuple(), IMAGENET)
    assert _same(backbone_normalization("siglip-base-patch16-224").as_tuple(), HALF)


def test_open_clip_normalisation_comes_from_open_clip_per_model():
    from llava_vitsplit.backbones.normalization import backbone_normalization

    def open_clip(name, **extra):
        return backbone_normalization({"model_type": "open_clip", "model_name": name, **extra}).as_tuple()

    assert _same(open_clip("ViT-B-16"), OPENAI_CLIP)
    assert _same(open_clip("ViT-L-14-CLIPA"), IMAGENET)  # CLIPA models ship ImageNet's
    with pytest.raises(ValueError, match="pretrained_tag"):
        open_clip("ViT-L-14")  # its tags disagree (laion2b_s32b_b82k uses 0.5)
    assert _same(open_clip("ViT-L-14", pretrained_tag="laion2b_s32b_b82k"), HALF)
    assert _same(open_clip("ViT-L-14", pretrained_tag="openai"), OPENAI_CLIP)
    with pytest.raises(ValueError, match="unknown open_clip pretrained tag"):
        open_clip("ViT-B-16", pretrained_tag="nope")


@pytest.fixture(scope="module")
def clip_depth_run(tmp_path_factory):
    """A 2-step depth run on a tiny CLIP whose weights folder has its own preprocessor config."""
    tmp = tmp_path_factory.mktemp("clip_depth")
    root = make_depth_set(tmp / "data", n_train=4, n_val=2)
    weights = _save_tiny_clip(tmp / "weights", CUSTOM)
    preset = _preset("depth", "clip", num_classes=0, batch_size=2)
    run = tmp / "run"
    argv = train_argv(preset_file(tmp, preset), root, run, "--max-iters", "2", "--log-interval", "1")
    assert cli([*argv, "--backbone-weights", str(weights)]) == 0
    return root, run / "checkpoints" / "step-0000002", preset


def _with_recorded(ckpt, tmp_path, normalization):
    """A copy of ``ckpt`` whose checkpoint.json records ``normalization`` (``None``: no field, as before)."""
    copy = tmp_path / "ckpt" / ckpt.name
    shutil.copytree(ckpt, copy)
    meta = json.loads((copy / "checkpoint.json").read_text())
    if normalization is None:
        del meta["backbone"]["normalization"]
    else:
        meta["backbone"]["normalization"] = {"mean": list(normalization[0]), "std": list(normalization[1])}
    (copy / "checkpoint.json").write_text(json.dumps(meta))
    return copy


def test_the_checkpoint_records_what_training_used(clip_depth_run):
    _, ckpt, _ = clip_depth_run
    recorded = json.loads((ckpt / "checkpoint.json").read_text())["backbone"]["normalization"]
    assert _same((tuple(recorded["mean"]), tuple(recorded["std"])), CUSTOM)


def _depth_predictions(ckpt, images, normalization) -> list[torch.Tensor]:
    """Metres ``[H, W]`` per image from the checkpoint's model on images normalised by hand."""
    from llava_vitsplit.dense.inference import predict_resized
    from llava_vitsplit.dense.loading import load_models

    loaded = load_models([ckpt])
    name = loaded.dense_presets[0].name
    with torch.no_grad():
        return [
            predict_resized(
                lambda x: loaded.dense(x)[name], _normalised(p, normalization)[None], (64, 64), None, None
            )[0, 0]
            for p in images
        ]


def test_dense_predict_and_eval_use_the_recorded_normalisation(clip_depth_run, tmp_path):
    from llava_vitsplit.dense.evaluation import evaluate_dense
    from llava_vitsplit.dense.loading import load_models

    root, ckpt, preset = clip_depth_run
    ckpt = _with_recorded(ckpt, tmp_path, RECORDED)
    images = sorted((root / "images" / "val").glob("*.png"))
    assert (
        cli(
            [
                "dense-predict",
                "--checkpoint",
                str(ckpt),
                "--images",
                *map(str, images),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    written = [np.array(Image.open(tmp_path / preset.name / f"{p.stem}_depth.png")) for p in images]
    wanted = _depth_predictions(ckpt, images, RECORDED)
    others = _depth_predictions(ckpt, images, CUSTOM)
    for got, want, other in zip(written, wanted, others, strict=True):
        millimetres = torch.from_numpy(got.astype(np.float64))
        assert (millimetres - want.double() * 1000).abs().max() <= 0.51
        assert (millimetres - other.double() * 1000).abs().max() > 5  # the check can tell them apart

    out = tmp_path / "metrics.json"
    assert cli(["dense-eval", "--checkpoint", str(ckpt), "--data-root", str(root), "--out", str(out)]) == 0
    items = [dict(item) for item in build_dataset(preset, root, "val", train=False)]
    for item in items:
        item["pixel_values"] = _normalised(item["path"], RECORDED)
    expected = evaluate_dense(load_models([ckpt]).dense, preset, items, torch.device("cpu"))
    metrics = json.loads(out.read_text())
    assert metrics["abs_rel"] == pytest.approx(expected["abs_rel"], rel=1e-5)
    assert metrics["rmse"] == pytest.approx(expected["rmse"], rel=1e-5)


def test_an_old_checkpoint_without_the_field_loads_with_imagenet(clip_depth_run, tmp_path):
    """Checkpoints from before the field was recorded were all trained on ImageNet-normalised inputs."""
    from llava_vitsplit.dense.loading import load_models

    _, ckpt, preset = clip_depth_run
    loaded = load_models([_with_recorded(ckpt, tmp_path, None)])
    assert _same(loaded.normalization[preset.name].as_tuple(), IMAGENET)
    assert _same(load_models([ckpt]).normalization[preset.name].as_tuple(), CUSTOM)


def test_a_loaded_mask_rcnn_normalises_as_its_checkpoint_records(tmp_path):
    from llava_vitsplit.dense.loading import load_models
    from llava_vitsplit.testing.dense_synthetic import make_coco_set

    root = make_coco_set(tmp_path / "coco", n_train=2, n_val=1)
    preset = _preset("detection", "siglip", batch_size=2)
    run = tmp_path / "run"
    argv = train_argv(preset_file(tmp_path, preset), root, run, "--max-iters", "1", "--val-split", "")
    assert cli(argv) == 0
    ckpt = run / "checkpoints" / "step-0000001"
    _, model = load_models([ckpt]).standalone[0]
    assert _same((model.transform.image_mean, model.transform.image_std), HALF)
    _, model = load_models([_with_recorded(ckpt, tmp_path, RECORDED)]).standalone[0]
    assert _same((model.transform.image_mean, model.transform.image_std), RECORDED)


def test_cka_normalises_with_the_towers_mean_and_std(tmp_path):
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    from llava_vitsplit.dense.cka import layer_features, linear_cka_matrix

    images = sorted(
        (make_segmentation_set(tmp_path / "imgs", n_train=3, n_val=0) / "images" / "train").glob("*")
    )
    spec = TOWERS["clip"][0]
    (tmp_path / "backbone.json").write_text(json.dumps(spec))
    argv = ["cka", "--backbone", str(tmp_path / "backbone.json"), "--out", str(tmp_path / "cka")]
    torch.manual_seed(0)
    assert cli([*argv, "--images", *map(str, images), "--size", "32", "--tokens-per-image", "8"]) == 0
    got = torch.tensor(json.loads((tmp_path / "cka" / "cka.json").read_text())["cka"], dtype=torch.float64)

    def cka(normalization) -> torch.Tensor:
        torch.manual_seed(0)
        backbone = build_backbone(spec)
        prep = v2.Compose(
            [
                v2.Resize((32, 32), antialias=True),  # on the uint8 image, as the command does
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(*normalization),
            ]
        )
        pixels = [prep(TF.to_image(Image.open(p).convert("RGB"))) for p in images]
        return linear_cka_matrix(layer_features(backbone, pixels, 8))

    torch.testing.assert_close(got, cka(OPENAI_CLIP), atol=1e-6, rtol=1e-6)
    assert (cka(IMAGENET) - got).abs().max() > 1e-4  # the check can tell them apart

"""LLaVA data loading: records, robust images, the lazy dataset, collator, grouped sampler, validate-data."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from _script_runs import SHIPPED_DATA
from PIL import Image, ImageFile

from llava_vitsplit.data import (
    IGNORE_INDEX,
    DataProblem,
    LazySupervisedDataset,
    ModalityLengthGroupedSampler,
    SupervisedCollator,
    load_image,
    parse_record,
)
from llava_vitsplit.data.validate import main as validate_main
from llava_vitsplit.model.parts import processor_from_parts
from llava_vitsplit.testing.tiny_parts import save_tiny_parts


def conv(question="<image>\nWhat is it?", answer="A red circle."):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    parts = save_tiny_parts(tmp_path_factory.mktemp("parts"), SHIPPED_DATA)
    return processor_from_parts(str(parts["vision"]), str(parts["llm"]))


@pytest.fixture()
def image_dir(tmp_path):
    """One file per image case the loader must handle (or reject with a DataProblem)."""
    d = tmp_path / "images"
    d.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(d / "rgb.png")
    Image.new("L", (30, 40), 77).save(d / "gray.png")
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    rgba.paste((10, 200, 10, 255), (0, 0, 10, 20))
    rgba.save(d / "rgba.png")
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(d / "cmyk.jpg")
    Image.fromarray(np.array([[65535, 32768], [0, 257]], dtype=np.uint16)).save(d / "depth16.png")
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(d / "palette.png", transparency=0)
    (d / "corrupt.jpg").write_bytes(b"\x00not an image at all" * 10)
    (d / "empty.png").write_bytes(b"")
    full = (d / "rgb.png").read_bytes()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(d / "big.jpg", quality=95)
    (d / "truncated.jpg").write_bytes((d / "big.jpg").read_bytes()[:300])
    (d / "truncated.png").write_bytes(full[: len(full) // 2])
    return d


# -- records -------------------------------------------------------------------------------------------
def test_record_moves_image_tag_to_the_front():
    sample = parse_record({"id": 7, "image": "a.png", "conversations": conv("Describe.\n<image>")}, 0)
    assert sample.id == "7" and sample.turns[0].text == "<image>\nDescribe."
    assert [t.role for t in sample.turns] == ["user", "assistant"]


def test_record_without_tag_gets_one_and_trailing_question_is_dropped():
    convs = conv("Describe.") + [{"from": "human", "value": "unanswered"}]
    sample = parse_record({"id": "a", "image": "a.png", "conversations": convs}, 0)
    assert sample.turns[0].text.startswith("<image>\n") and len(sample.turns) == 2


@pytest.mark.parametrize(
    "record, kind, field",
    [
        ({"id": "x"}, "malformed_record", "conversations"),
        ({"id": "x", "conversations": [{"from": "robot", "value": "hi"}]}, "malformed_record", "from"),
        ({"id": "x", "conversations": conv()[::-1]}, "malformed_record", "alternate"),
        (
            {"id": "x", "conversations": [{"from": "human", "value": 3}, conv()[1]]},
            "malformed_record",
            "value",
        ),
        ({"id": "x", "conversations": conv(answer=" ")}, "malformed_record", "empty"),
        ({"id": "x", "image": "", "conversations": conv()}, "malformed_record", "image"),
        ({"id": "x", "conversations": conv()}, "image_tag_without_image", "no 'image'"),
        (
            {"id": "x", "image": "a.png", "conversations": conv("<image><image>")},
            "bad_image_tag",
            "exactly one",
        ),
        (["not", "a", "dict"], "malformed_record", "list"),
    ],
)
def test_bad_records_raise_a_problem_naming_the_sample(record, kind, field):
    with pytest.raises(DataProblem) as info:
        parse_record(record, 3)
    assert info.value.kind == kind and field in info.value.detail
    assert info.value.record_id == ("x" if isinstance(record, dict) else "#3")


# -- images --------------------------------------------------------------------------------------------
def test_image_modes_become_8bit_rgb(image_dir):
    for name in ("rgb.png", "gray.png", "rgba.png", "cmyk.jpg", "depth16.png", "palette.png"):
        image = load_image(image_dir / name, name)
        assert image.mode == "RGB", name
    gray = np.asarray(load_image(image_dir / "gray.png", "g"))
    assert gray.shape == (40, 30, 3) and (gray == 77).all()
    rgba = np.asarray(load_image(image_dir / "rgba.png", "a"))
    assert tuple(rgba[0, 0]) == (10, 200, 10)
    assert tuple(rgba[0, 19]) == (255, 255, 255)  # transparent pixels become white
    cmyk = np.asarray(load_image(image_dir / "cmyk.jpg", "c")).astype(int)
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1:].mean() < 60  # C=0 M=Y=255 is red
    depth = np.asarray(load_image(image_dir / "depth16.png", "d"))[..., 0]
    assert depth.tolist() == [[255, 128], [0, 1]]  # scaled by 65535/255, not clipped to white
    palette = np.asarray(load_image(image_dir / "palette.png", "p"))
    assert tuple(palette[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("missing.png", "missing_image"),
        ("corrupt.jpg", "corrupt_image"),
        ("empty.png", "corrupt_image"),
        ("truncated.jpg", "corrupt_image"),
        ("truncated.png", "corrupt_image"),
    ],
)
def test_unreadable_images_raise_a_problem(image_dir, name, kind, monkeypatch):
    # some libraries (lmms-eval) set PIL's process-wide switch to accept truncated files
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataProblem) as info:
        load_image(image_dir / name, "s1")
    assert info.value.kind == kind and info.value.record_id == "s1" and name in info.value.detail


# -- dataset -------------------------------------------------------------------------------------------
def write_mixed_set(tmp_path, image_dir):
    records = [
        {"id": "good1", "image": "rgb.png", "conversations": conv()},
        {"id": "missing", "image": "missing.png", "conversations": conv()},
        {"id": "corrupt", "image": "corrupt.jpg", "conversations": conv()},
        {"id": "truncated", "image": "truncated.png", "conversations": conv()},
        {"id": "notag", "conversations": conv()},
        {"id": "noconv"},
        {"id": "gray", "image": "gray.png", "conversations": conv()},
        {"id": "cmyk", "image": "cmyk.jpg", "conversations": conv()},
        {"id": "depth", "image": "depth16.png", "conversations": conv()},
        {"id": "text", "conversations": conv("What is 1 plus 1?", "Two.")},
        {"id": "long", "conversations": conv("word " * 400, "Short.")},
    ]
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps(r) for r in records]
    lines.insert(3, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dataset_skips_and_counts_every_bad_sample(tmp_path, image_dir, processor, caplog):
    path = write_mixed_set(tmp_path, image_dir)
    caplog.set_level(logging.WARNING)
    ds = LazySupervisedDataset(
        path, processor, image_folder=image_dir, template="vicuna_v1", model_max_length=120
    )
    assert len(ds) == 9  # the invalid JSON line and the record without conversations are left out
    ids = [ds.sample(i).id for i in range(len(ds))]
    items = [ds[i] for i in range(len(ds))]  # never raises
    for item in items:
        assert (item["labels"] != IGNORE_INDEX).any()
        assert len(item["input_ids"]) <= 120
    assert (
        items[ids.index("missing")]["input_ids"].tolist() == ds.build(ids.index("gray"))["input_ids"].tolist()
    )
    assert dict(ds.problems) == {
        "malformed_record": 2,
        "image_tag_without_image": 1,
        "missing_image": 1,
        "corrupt_image": 2,
        "no_target_tokens": 1,
    }
    for bad in ("missing", "corrupt", "truncated", "notag", "noconv", "long", "mixed.jsonl:4"):
        assert any(bad in record.getMessage() for record in caplog.records), bad
    assert items[ids.index("gray")]["pixel_values"].shape == (1, 3, 56, 56)  # [n_img, 3, H, W]
    assert "pixel_values" not in items[ids.index("text")]
    lengths = ds.modality_lengths
    assert lengths[ids.index("text")] < 0 < lengths[ids.index("good1")]


def test_strict_mode_checks_every_sample_before_training_and_lists_them_all(tmp_path, image_dir, processor):
    path = write_mixed_set(tmp_path, image_dir)
    with pytest.raises(ValueError, match="7 bad record") as info:
        LazySupervisedDataset(path, processor, image_folder=image_dir, model_max_length=120, strict=True)
    message = str(info.value)
    for bad in ("missing", "corrupt", "truncated", "notag", "noconv", "long", "mixed.jsonl:4"):
        assert bad in message, bad
    assert f"{path}:" in message  # each with its file and line
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"id": "m", "image": "missing.png", "conversations": conv()}]))
    with pytest.raises(ValueError, match=f"{good} record 1: sample 'm': missing_image"):
        LazySupervisedDataset(good, processor, image_folder=image_dir, strict=True)  # not at its step


def test_skips_are_counted_per_record_even_with_shared_or_no_ids(tmp_path, image_dir, processor, caplog):
    records = [
        {"id": "same", "image": "nowhere.png", "conversations": conv()},
        {"id": "same", "image": "nowhere2.png", "conversations": conv()},
        {"image": "nowhere3.png", "conversations": conv()},
        {"id": "fine", "image": "rgb.png", "conversations": conv()},
    ]
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(records))
    second.write_text(json.dumps([{"image": "nowhere4.png", "conversations": conv()}]))
    caplog.set_level(logging.WARNING)
    ds = LazySupervisedDataset([first, second], processor, image_folder=image_dir)
    for i in range(len(ds)):
        ds[i]
    assert ds.problems["missing_image"] == 4
    for place in (f"{first} record 1", f"{first} record 2", f"{first} record 3", f"{second} record 1"):
        assert any(place in r.getMessage() for r in caplog.records), place


def test_a_missing_image_folder_is_one_clear_error(tmp_path, processor):
    with pytest.raises(FileNotFoundError, match="IMAGE_FOLDER .*nowhere does not exist"):
        LazySupervisedDataset(SHIPPED_DATA / "finetune.json", processor, image_folder=tmp_path / "nowhere")


def test_shipped_dataset_loads_and_collates(processor):
    ds = LazySupervisedDataset(
        SHIPPED_DATA / "finetune.json", processor, image_folder=SHIPPED_DATA, template="vicuna_v1"
    )
    assert not ds.problems
    items = [ds[0], ds[len(ds) - 1], ds[1]]  # image, text-only, image
    batch = SupervisedCollator(pad_token_id=processor.tokenizer.pad_token_id)(items)
    longest = max(len(i["input_ids"]) for i in items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, longest)
    assert batch["pixel_values"].shape == (2, 3, 56, 56)
    short = int(np.argmin([len(i["input_ids"]) for i in items]))
    n = len(items[short]["input_ids"])
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all() and (
        batch["attention_mask"][short, n:] == 0
    ).all()


# -- sampler -------------------------------------------------------------------------------------------
def test_grouped_sampler_keeps_each_step_in_one_modality():
    gen = np.random.default_rng(0)
    lengths = [int(n) for n in gen.integers(5, 400, 90)] + [-int(n) for n in gen.integers(5, 400, 38)]
    sampler = ModalityLengthGroupedSampler(lengths, batch_size=4, world_size=2, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))
    full_steps = [order[i : i + 8] for i in range(0, len(order) - len(order) % 8, 8)]
    mixed = [step for step in full_steps if len({lengths[i] > 0 for i in step}) > 1]
    assert len(mixed) <= 1  # only the leftovers at the very end may mix
    assert list(sampler) == order  # deterministic for a seed and epoch (resume sees the same order)
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_length_grouping_reduces_padding():
    gen = np.random.default_rng(1)
    lengths = [int(n) for n in gen.integers(10, 1000, 512)]

    def padding(order):
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = list(ModalityLengthGroupedSampler(lengths, batch_size=8, seed=0))
    ungrouped = list(ModalityLengthGroupedSampler(lengths, batch_size=8, seed=0, group_by_length=False))
    assert padding(grouped) < 0.3 * padding(ungrouped)


# -- validate-data -------------------------------------------------------------------------------------
def test_validate_data_reports_every_problem(tmp_path, image_dir, capsys):
    path = write_mixed_set(tmp_path, image_dir)
    assert validate_main(["--data_path", str(path), "--image_folder", str(image_dir), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["num_records"] == 12
    assert report["problem_counts"] == {
        "corrupt_image": 2,
        "image_tag_without_image": 1,
        "malformed_record": 2,
        "missing_image": 1,
    }
    assert {p["id"] for p in report["problems"]} == {
        "missing",
        "corrupt",
        "truncated",
        "notag",
        "noconv",
        "mixed.jsonl:4",
    }


def test_validate_data_with_tokenizer_checks_lengths(tmp_path, image_dir, processor, capsys):
    path = write_mixed_set(tmp_path, image_dir)
    processor.save_pretrained(tmp_path / "proc")
    code = validate_main(
        [
            "--data_path",
            str(path),
            "--image_folder",
            str(image_dir),
            "--processor",
            str(tmp_path / "proc"),
            "--model_max_length",
            "120",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1 and "long\tno_target_tokens" in out and "7 with problems" in out


def test_validate_data_passes_the_shipped_set(capsys):
    args = ["--data_path", str(SHIPPED_DATA / "pretrain.json"), str(SHIPPED_DATA / "finetune.json")]
    assert validate_main(args + ["--image_folder", str(SHIPPED_DATA)]) == 0
    assert "56 records (48 with image, 8 text-only): 56 usable, 0 with problems" in capsys.readouterr().out


def test_validate_data_reports_file_level_problems_and_goes_on(tmp_path, image_dir, capsys):
    not_a_list, not_utf8 = tmp_path / "dict.json", tmp_path / "latin1.json"
    not_a_list.write_text(json.dumps({"id": "x", "conversations": conv()}))
    not_utf8.write_bytes('[{"id": "é"}]'.encode("latin-1"))
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"id": "g", "image": "rgb.png", "conversations": conv()}]))
    paths = [str(p) for p in (not_a_list, not_utf8, good)]
    assert validate_main(["--data_path", *paths, "--image_folder", str(image_dir), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    by_id = {p["id"]: p for p in report["problems"]}
    assert (
        by_id[str(not_a_list)]["kind"] == "bad_file"
        and "expected a JSON list" in by_id[str(not_a_list)]["detail"]
    )
    assert by_id[str(not_utf8)]["kind"] == "bad_file" and "not UTF-8" in by_id[str(not_utf8)]["detail"]
    assert report["num_records"] == 1 and report["num_usable"] == 1  # the good file was still checked

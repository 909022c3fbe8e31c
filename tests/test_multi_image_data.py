"""Records with several images: parsing, limits, dataset items, collation and the model's image order."""

from __future__ import annotations

import json

import pytest
import torch
from _script_runs import SHIPPED_DATA

from llava_vitsplit.data import (
    IGNORE_INDEX,
    DataProblem,
    LazySupervisedDataset,
    SupervisedCollator,
    parse_record,
)
from llava_vitsplit.data.validate import main as validate_main
from llava_vitsplit.data.validate import validate_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RED, GREEN, BLUE = "images/00_red_circle.png", "images/08_green_square.png", "images/16_blue_triangle.png"


def record(rid, image, *turns):
    roles = ("human", "gpt")
    return {
        "id": rid,
        "image": image,
        "conversations": [{"from": roles[i % 2], "value": t} for i, t in enumerate(turns)],
    }


def test_tags_of_an_image_list_stay_where_they_are():
    sample = parse_record(
        record("m", [RED, GREEN], "Left: <image> right:", "Both round?", "And <image>?", "A square."), 0
    )
    assert sample.images == (RED, GREEN)
    assert [t.text for t in sample.turns] == [
        "Left: <image> right:",
        "Both round?",
        "And <image>?",
        "A square.",
    ]


def test_an_image_list_without_tags_gets_them_first_in_order():
    sample = parse_record(record("m", [RED, GREEN, BLUE], "  Compare them.", "Three shapes."), 0)
    assert sample.turns[0].text == "<image>\n<image>\n<image>\n  Compare them."
    assert (
        parse_record(record("one", [RED], "What is it?", "A circle."), 0).turns[0].text
        == "<image>\nWhat is it?"
    )


def test_a_single_image_string_works_as_before():
    sample = parse_record(record("s", RED, "Describe.\n<image>", "A circle."), 0)
    assert sample.images == (RED,) and sample.turns[0].text == "<image>\nDescribe."
    assert parse_record(record("t", None, "Hi", "Hello"), 0).images == ()


@pytest.mark.parametrize(
    ("image", "turns", "kind", "detail"),
    [
        ([RED, GREEN], ("<image> only one", "ok"), "bad_image_tag", "2 images in 'image' but 1 <image> tag"),
        ([RED], ("<image><image>", "ok"), "bad_image_tag", "1 images in 'image' but 2"),
        ([RED, GREEN], ("<image><image>", "see <image>"), "bad_image_tag", "assistant turns"),
        ([], ("q", "a"), "malformed_record", "non-empty list of paths"),
        ([RED, 3], ("q", "a"), "malformed_record", "non-empty list of paths"),
        ([RED, " "], ("q", "a"), "malformed_record", "non-empty list of paths"),
    ],
)
def test_bad_image_lists_are_problems_naming_the_record(image, turns, kind, detail):
    with pytest.raises(DataProblem, match=detail) as info:
        parse_record(record("rec7", image, *turns), 0)
    assert info.value.kind == kind and info.value.record_id == "rec7"


def test_max_images_per_sample():
    three = record("three", [RED, GREEN, BLUE], "q", "a")
    assert len(parse_record(three, 0, max_images=3).images) == 3
    with pytest.raises(DataProblem, match="3 images, over --max_images_per_sample=2") as info:
        parse_record(three, 0, max_images=2)
    assert info.value.kind == "too_many_images"


@pytest.fixture(scope="module")
def multi_file(tmp_path_factory):
    records = [
        record("one", RED, "<image>\nWhat shape?", "A circle."),
        record(
            "three",
            [RED, GREEN, BLUE],
            "Image 1: <image> Image 2: <image> Image 3: <image> Colours?",
            "Red, green, blue.",
        ),
        record("text", None, "What is 2 plus 2?", "Four."),
        record("two", [GREEN, BLUE], "Which is blue?", "The second."),
        record("mismatch", [GREEN, BLUE], "<image> Which is blue?", "The second."),
    ]
    path = tmp_path_factory.mktemp("multi") / "multi.json"
    path.write_text(json.dumps(records))
    return path


def dataset(path, processor, **options):
    return LazySupervisedDataset(path, processor, image_folder=SHIPPED_DATA, template="vicuna_v1", **options)


def test_dataset_items_carry_one_image_per_tag_in_order(multi_file, tiny_checkpoint):
    _, _, processor = tiny_checkpoint
    ds = dataset(multi_file, processor)
    assert [ds.sample(i).id for i in range(len(ds))] == ["one", "three", "text", "two"]
    assert dict(ds.problems) == {"bad_image_tag": 1}
    n = ds.num_image_tokens
    three = ds[1]
    assert three["pixel_values"].shape == (3, 3, 56, 56)  # [n_img, 3, H, W]
    assert int((three["input_ids"] == ds.image_token_id).sum()) == 3 * n
    single = ds.pixel_values
    from llava_vitsplit.data import load_image

    for i, name in enumerate((RED, GREEN, BLUE)):
        torch.testing.assert_close(three["pixel_values"][i], single(load_image(SHIPPED_DATA / name, "x")))
    assert "pixel_values" not in ds[2] and ds[0]["pixel_values"].shape == (1, 3, 56, 56)
    lengths = ds.modality_lengths
    assert lengths[1] == ds.sample(1).num_words + 3 * n and lengths[0] == ds.sample(0).num_words + n
    assert lengths[2] < 0


def test_max_images_per_sample_skips_with_the_usual_accounting(multi_file, tiny_checkpoint):
    _, _, processor = tiny_checkpoint
    ds = dataset(multi_file, processor, max_images_per_sample=2)
    assert [ds.sample(i).id for i in range(len(ds))] == ["one", "text", "two"]
    assert dict(ds.problems) == {"bad_image_tag": 1, "too_many_images": 1}
    with pytest.raises(
        ValueError, match=r"2 bad record\(s\)[\s\S]*record 2: sample 'three': too_many_images"
    ):
        dataset(multi_file, processor, max_images_per_sample=2, strict=True)
    with pytest.raises(ValueError, match="max_images_per_sample must be >= 1"):
        dataset(multi_file, processor, max_images_per_sample=0)


def test_validate_data_reports_image_count_problems(multi_file, capsys):
    report = validate_data([multi_file], SHIPPED_DATA, max_images_per_sample=2)
    assert {(p.record_id, p.kind) for p in report.problems} == {
        ("three", "too_many_images"),
        ("mismatch", "bad_image_tag"),
    }
    args = [
        "--data_path",
        str(multi_file),
        "--image_folder",
        str(SHIPPED_DATA),
        "--max_images_per_sample",
        "2",
    ]
    assert validate_main(args) == 1
    assert "three\ttoo_many_images\t3 images, over --max_images_per_sample=2" in capsys.readouterr().out


def test_validate_data_decodes_every_image_of_a_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([record("m", [RED, "images/missing.png"], "q", "a")]))
    [problem] = validate_data([path], SHIPPED_DATA).problems
    assert problem.kind == "missing_image" and "missing.png" in problem.detail


def test_a_batch_of_0_1_and_3_images_matches_each_sample_alone(multi_file, tiny_checkpoint):
    """The collator concatenates images in sample order; each row's logits equal the sample run alone."""
    _, model, processor = tiny_checkpoint
    ds = dataset(multi_file, processor)
    items = [ds[2], ds[1], ds[0]]  # 0, 3 and 1 images
    batch = SupervisedCollator(pad_token_id=processor.tokenizer.pad_token_id)(items)
    assert batch["pixel_values"].shape == (4, 3, 56, 56)
    torch.testing.assert_close(batch["pixel_values"][:3], items[1]["pixel_values"])
    torch.testing.assert_close(batch["pixel_values"][3], items[2]["pixel_values"][0])
    model.eval()
    with torch.no_grad():
        together = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
        ).logits
        for row, item in enumerate(items):
            inputs = {"input_ids": item["input_ids"][None]}
            if "pixel_values" in item:
                inputs["pixel_values"] = item["pixel_values"]
            alone = model(**inputs).logits[0]  # [T, V]
            torch.testing.assert_close(together[row, : len(item["input_ids"])], alone, atol=1e-5, rtol=1e-4)
        swapped = model(
            input_ids=items[1]["input_ids"][None], pixel_values=items[1]["pixel_values"].flip(0)
        ).logits
    length = len(items[1]["input_ids"])
    assert not torch.allclose(swapped[0], together[1, :length], atol=1e-4)  # the i-th tag is the i-th image


def test_a_multi_image_loss_trains_the_connector(multi_file, tiny_checkpoint):
    _, model, processor = tiny_checkpoint
    ds = dataset(multi_file, processor)
    batch = SupervisedCollator(pad_token_id=processor.tokenizer.pad_token_id)([ds[1], ds[3]])
    assert (batch["labels"] != IGNORE_INDEX).any()
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    grads = [p.grad for p in model.connector.parameters() if p.requires_grad]
    assert grads and any(g is not None and torch.count_nonzero(g) > 0 for g in grads)
    model.zero_grad(set_to_none=True)

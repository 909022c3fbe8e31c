"""Data mixtures: the file format and its errors, the seeded draw, per-source image folders and templates,
the realised counts (written, and checked on resume), validate-data and --strict_data with a mixture."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from _script_runs import ROOT, SHIPPED_DATA
from test_data import conv, processor  # noqa: F401 (fixture)

from llava_vitsplit.data import LazySupervisedDataset
from llava_vitsplit.data.mixture import (
    MIXTURE_REPORT,
    DataSource,
    draw,
    is_mixture,
    load_mixture,
    record_draw,
    resolve_sources,
)
from llava_vitsplit.data.templates import get_template
from llava_vitsplit.data.validate import main as validate_main

EXAMPLE = ROOT / "scripts" / "mixtures" / "llava_v1_5_mix665k.yaml"


def write_three_sources(root: Path) -> dict:
    """Image records split over two files (one JSONL, its images in another folder) and a text-only file."""
    records = json.loads((SHIPPED_DATA / "finetune.json").read_text())
    images = [r for r in records if "image" in r]
    texts = [r for r in records if "image" not in r]
    (root / "a").mkdir(parents=True)
    (root / "a" / "a.json").write_text(json.dumps(images[:14]))
    (root / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in images[14:]))
    shutil.copytree(SHIPPED_DATA / "images", root / "b_images" / "images")
    (root / "c.json").write_text(json.dumps(texts))
    return {"images": images, "texts": texts}


def mixture(root: Path, suffix=".yaml", **changes) -> Path:
    sources = [
        {"name": "a", "file": "a/a.json", "fraction": 0.5},
        {"name": "b", "files": ["b.jsonl"], "image_folder": "b_images", "repeat": 2},
        {"name": "c", "file": "c.json", "count": 12, "template": "plain"},
    ]
    for number, change in changes.items():
        sources[int(number[1:])].update(change)
    path = root / f"mix{suffix}"
    text = yaml.safe_dump({"sources": sources}) if suffix == ".yaml" else json.dumps({"sources": sources})
    path.write_text(text)
    return path


def test_a_mixture_file_is_read_with_paths_relative_to_it(tmp_path):
    write_three_sources(tmp_path)
    for suffix in (".yaml", ".json"):
        path = mixture(tmp_path, suffix)
        assert is_mixture(path) and not is_mixture(tmp_path / "c.json")
        a, b, c = load_mixture(path, image_folder=SHIPPED_DATA)
        assert a == DataSource("a", (tmp_path / "a" / "a.json",), SHIPPED_DATA, None, fraction=0.5)
        assert (
            b.image_folder == tmp_path / "b_images" and b.repeat == 2 and b.files == (tmp_path / "b.jsonl",)
        )
        assert c.template == "plain" and c.count == 12 and c.amount() == "count 12"
    stage1 = resolve_sources([str(path)], SHIPPED_DATA, templates=False)
    assert [s.template for s in stage1] == [None, None, None]
    (plain,) = resolve_sources([str(tmp_path / "c.json")], SHIPPED_DATA)
    assert plain.name == "data" and plain.amount() == "all"


def test_every_problem_in_a_mixture_is_one_error_naming_the_file_and_sources(tmp_path):
    write_three_sources(tmp_path)
    path = mixture(
        tmp_path,
        s0={"file": "a/missing.json", "fraction": 1.5},
        s1={"name": "c", "count": -3, "repeat": None},
        s2={"template": "nope", "fraction": 0},
    )
    with pytest.raises(ValueError) as info:
        load_mixture(path)
    message = str(info.value)
    assert message.startswith(f"mixture {path}: 6 problem(s)")
    for expected in (
        f"source 'a': data file {tmp_path / 'a' / 'missing.json'} not found",
        "source 'a': fraction 1.5 is outside (0, 1]",
        "source 'c': count must be a whole number >= 0, got -3",
        "source 'c': template 'nope' is not one of",
        "source 'c': give at most one of fraction/count/repeat (got fraction, count)",
        "source 'c': the name is used twice",
    ):
        assert expected in message, expected
    for bad, expected in (
        ({"s0": {"fraction": 0}}, "fraction 0 is outside (0, 1]"),
        ({"s0": {"image_folder": "nowhere"}}, f"image folder {tmp_path / 'nowhere'} does not exist"),
        ({"s1": {"repeat": 0}}, "repeat must be > 0"),
        ({"s2": {"colour": "red"}}, "unknown key(s) ['colour']"),
    ):
        with pytest.raises(ValueError, match=r"source '.': " + re.escape(expected)):
            load_mixture(mixture(tmp_path, **bad))
    (tmp_path / "empty.yaml").write_text("sources: []\n")
    with pytest.raises(ValueError, match="non-empty `sources:` list"):
        load_mixture(tmp_path / "empty.yaml")


def test_the_draw_is_seeded_keeps_file_order_and_repeats_whole_copies():
    half = DataSource("x", (), fraction=0.5)
    first = draw(half, 10, seed=1)
    assert len(first) == 5 and list(first) == sorted(first) and len(set(first.tolist())) == 5
    assert (draw(half, 10, seed=1) == first).all()
    assert any((draw(half, 10, seed=s) != first).any() for s in (2, 3, 4))
    assert not (draw(DataSource("y", (), fraction=0.5), 10, seed=1) == first).all()  # seeded by name too
    more = draw(DataSource("x", (), count=25), 10, seed=1)
    assert (more[:20] == np.tile(np.arange(10), 2)).all() and len(set(more[20:].tolist())) == 5
    assert len(draw(DataSource("x", (), repeat=2.5), 10, seed=0)) == 25
    assert (draw(DataSource("x", ()), 7, seed=0) == np.arange(7)).all()
    assert len(draw(DataSource("x", (), count=0), 7, seed=0)) == 0


def test_a_three_source_dataset_uses_each_source_folder_template_and_share(tmp_path, processor):  # noqa: F811
    data = write_three_sources(tmp_path)
    ds = LazySupervisedDataset(mixture(tmp_path), processor, image_folder=SHIPPED_DATA, seed=5)
    counts = {entry["name"]: (entry["usable"], entry["samples"]) for entry in ds.mixture}
    assert counts == {"a": (14, 7), "b": (10, 20), "c": (8, 12)}
    assert len(ds) == 39
    ids = [ds.sample(i).id for i in range(len(ds))]
    assert ids[7:27] == [r["id"] for r in data["images"][14:]] * 2  # b twice, in file order
    assert set(ids[:7]) <= {r["id"] for r in data["images"][:14]}
    assert ids[27:35] == [r["id"] for r in data["texts"]]  # c: one copy, then 4 drawn
    item = ds[10]  # from b: its image is found in b's own folder
    assert item["pixel_values"].shape[:2] == (1, 3)  # [n_img, 3, H, W]
    plain = LazySupervisedDataset(tmp_path / "c.json", processor, template=get_template("plain"))
    assert ds.build(27)["input_ids"].tolist() == plain.build(0)["input_ids"].tolist()
    again = LazySupervisedDataset(mixture(tmp_path), processor, image_folder=SHIPPED_DATA, seed=5)
    assert [again.sample(i).id for i in range(len(again))] == ids
    stage1 = LazySupervisedDataset(mixture(tmp_path), processor, require_image=True, seed=5)
    assert [e["samples"] for e in stage1.mixture] == [7, 20, 0] and stage1.num_text_only_dropped == 8


def test_realised_counts_are_written_and_a_resume_must_draw_the_same(tmp_path, processor):  # noqa: F811
    write_three_sources(tmp_path)
    ds = LazySupervisedDataset(mixture(tmp_path), processor, image_folder=SHIPPED_DATA, seed=5)
    report = record_draw(tmp_path / "out", ds.mixture, resuming=False, write=True)
    saved = json.loads(report.read_text())
    assert report.name == MIXTURE_REPORT and saved["total"] == 39
    assert [(e["name"], e["samples"], e["amount"]) for e in saved["sources"]] == [
        ("a", 7, "fraction 0.5"),
        ("b", 20, "repeat 2"),
        ("c", 12, "count 12"),
    ]
    record_draw(tmp_path / "out", ds.mixture, resuming=True, write=True)  # the same draw: fine
    changed = LazySupervisedDataset(mixture(tmp_path, s2={"count": 5}), processor, image_folder=SHIPPED_DATA)
    with pytest.raises(ValueError, match=f"the data draw differs .*{MIXTURE_REPORT}"):
        record_draw(tmp_path / "out", changed.mixture, resuming=True, write=True)


def test_strict_data_and_validate_data_take_a_mixture(tmp_path, processor, capsys):  # noqa: F811
    write_three_sources(tmp_path)
    path = mixture(tmp_path)
    assert validate_main(["--data_path", str(path), "--image_folder", str(SHIPPED_DATA)]) == 0
    summary = capsys.readouterr().out  # every record of every source, not the draw
    assert "32 records (24 with image, 8 text-only): 32 usable" in summary
    (tmp_path / "b_images" / "images" / "00_red_circle.png").unlink()  # b's folder only
    with open(tmp_path / "b.jsonl", "a") as f:
        f.write(
            json.dumps({"id": "lost", "image": "images/00_red_circle.png", "conversations": conv()}) + "\n"
        )
    assert validate_main(["--data_path", str(path), "--image_folder", str(SHIPPED_DATA)]) == 1
    assert "lost\tmissing_image" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"(?s)--strict_data: 1 bad record.*b.jsonl:11: sample 'lost'"):
        LazySupervisedDataset(path, processor, image_folder=SHIPPED_DATA, strict=True)
    assert validate_main(["--data_path", str(mixture(tmp_path, s0={"count": -1, "fraction": None}))]) == 1
    assert "source 'a': count must be a whole number >= 0" in capsys.readouterr().out


def test_a_bad_mixture_stops_training_before_the_model_is_built(tmp_path, monkeypatch):
    from llava_vitsplit.train import run

    write_three_sources(tmp_path)
    monkeypatch.setattr(run, "setup_model", lambda *a: pytest.fail("the model was built"))
    argv = ["--model_name_or_path", "x", "--vision_tower", "y", "--report_to", "none"]
    argv += ["--data_path", str(mixture(tmp_path, s1={"name": "a"})), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match=r"(?s)mix.yaml: 1 problem.*source 'a': the name is used twice"):
        run.train(argv)


def test_the_shipped_llava_665k_mixture_names_its_file_and_folder(tmp_path):
    layout = tmp_path / "repo"
    (layout / "scripts" / "mixtures").mkdir(parents=True)
    example = shutil.copy(EXAMPLE, layout / "scripts" / "mixtures")
    with pytest.raises(ValueError, match="llava_v1_5_mix665k.json not found"):
        load_mixture(example)
    data = layout / "playground" / "data"
    data.mkdir(parents=True)
    (data / "llava_v1_5_mix665k.json").write_text("[]")
    (source,) = load_mixture(example)
    assert source.files == (
        layout / "scripts" / "mixtures" / "../../playground/data/llava_v1_5_mix665k.json",
    )
    assert source.image_folder.resolve() == data.resolve() and source.amount() == "all"

"""``llava-vitsplit answer``: batched answers, sharding, resuming after a crash, and merging shards."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from llava_vitsplit.serve import answer


@pytest.fixture
def questions(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    records = []
    for index in range(7):
        record = {"question_id": f"q{index}", "text": f"Is shape {index} red?", "category": "test"}
        if index != 3:  # q3 is text-only
            name = f"sub/{index}.jpg" if index == 5 else f"{index}.png"
            Image.new("RGB", (40 + index * 7, 30), (index * 30, 0, 0)).save(images / name)
            record["image"] = name
        records.append(record)
    question_file = tmp_path / "questions.jsonl"
    question_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    return question_file, images


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(checkpoint, question_file, images, answers, *extra):
    argv = [
        "--model",
        str(checkpoint),
        "--question-file",
        str(question_file),
        "--image-folder",
        str(images),
        "--answers-file",
        str(answers),
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "6",
        *extra,
    ]
    return answer.main(argv)


def test_chunks_cover_everything_once():
    items = list(range(10))
    parts = [answer.chunk(items, 3, k) for k in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sum(parts, []) == items
    assert answer.chunk(items[:2], 4, 3) == []
    with pytest.raises(ValueError, match="chunk-idx"):
        answer.chunk(items, 2, 2)


def test_shards_resume_and_merge(yes_checkpoint, questions, tmp_path):
    question_file, images = questions
    shards = [tmp_path / "answers" / f"2_{k}.jsonl" for k in range(2)]
    for k, shard in enumerate(shards):
        assert (
            run(yes_checkpoint, question_file, images, shard, "--num-chunks", "2", "--chunk-idx", str(k)) == 0
        )
    first, second = read_jsonl(shards[0]), read_jsonl(shards[1])
    assert [r["question_id"] for r in first] == ["q0", "q1", "q2", "q3"]
    assert [r["question_id"] for r in second] == ["q4", "q5", "q6"]
    assert all(r["text"] == "yes" and r["model_id"] == yes_checkpoint.name for r in first + second)
    assert first[0]["prompt"] == "Is shape 0 red?" and set(first[0]) >= {"answer_id", "metadata"}

    # simulate a crash in shard 1: one complete record and half of the next one
    lines = shards[1].read_text().splitlines(keepends=True)
    shards[1].write_text(lines[0] + lines[1][:20])
    assert run(yes_checkpoint, question_file, images, shards[1], "--num-chunks", "2", "--chunk-idx", "1") == 0
    resumed = read_jsonl(shards[1])
    assert sorted(r["question_id"] for r in resumed) == ["q4", "q5", "q6"]
    assert resumed[0]["answer_id"] == second[0]["answer_id"]  # kept, not recomputed

    # a finished shard is not recomputed at all
    before = shards[0].read_text()
    assert run(yes_checkpoint, question_file, images, shards[0], "--num-chunks", "2", "--chunk-idx", "0") == 0
    assert shards[0].read_text() == before

    merged = tmp_path / "merged.jsonl"
    argv = [
        "--question-file",
        str(question_file),
        "--answers-file",
        str(merged),
        "--merge",
        *map(str, shards),
    ]
    assert answer.main(argv) == 0
    assert [r["question_id"] for r in read_jsonl(merged)] == [f"q{i}" for i in range(7)]


def test_merge_refuses_incomplete_or_duplicated_shards(questions, tmp_path, capsys):
    question_file, _ = questions
    shard = tmp_path / "shard.jsonl"
    shard.write_text(json.dumps({"question_id": "q0", "text": "yes"}) + "\n")
    merged = tmp_path / "merged.jsonl"
    argv = ["--question-file", str(question_file), "--answers-file", str(merged), "--merge", str(shard)]
    assert answer.main(argv) == 2
    assert "6 of 7 questions have no answer" in capsys.readouterr().err
    assert answer.main([*argv, "--allow-missing"]) == 0
    assert answer.main([*argv, str(shard)]) == 2
    assert "answered twice" in capsys.readouterr().err


def test_missing_image_fails_before_loading_the_model(questions, tmp_path, capsys):
    question_file, images = questions
    (images / "2.png").unlink()
    code = run(tmp_path / "not_a_checkpoint", question_file, images, tmp_path / "a.jsonl")
    assert code == 2
    err = capsys.readouterr().err
    assert "question_id 'q2'" in err and "2.png" in err


def test_bad_question_file_names_line_and_field(tmp_path, capsys):
    question_file = tmp_path / "q.jsonl"
    question_file.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 2, "image": "x.png"}\n')
    code = answer.main(
        ["--model", "m", "--question-file", str(question_file), "--answers-file", str(tmp_path / "a")]
    )
    assert code == 2
    assert f"{question_file} line 2: missing field 'text'" in capsys.readouterr().err


def break_images(images):
    """q2's PNG cut short (truncated data) and q5's JPEG replaced by text (not an image)."""
    Image.effect_noise((64, 64), 40).convert("RGB").save(images / "2.png")
    data = (images / "2.png").read_bytes()
    (images / "2.png").write_bytes(data[: len(data) // 2])
    (images / "sub" / "5.jpg").write_text("not a picture")


def test_bad_images_are_all_listed_before_the_first_batch(yes_checkpoint, questions, tmp_path, capsys):
    question_file, images = questions
    break_images(images)
    answers = tmp_path / "a.jsonl"
    assert run(yes_checkpoint, question_file, images, answers) == 2
    err = capsys.readouterr().err
    assert "2 question(s) have an image that cannot be used" in err
    assert "question_id 'q2'" in err and "2.png is corrupt or truncated" in err
    assert "question_id 'q5'" in err and "5.jpg is not an image file" in err
    assert "--skip-bad" in err and "checking images" in err  # the progress bar of the check
    assert not answers.exists()  # nothing started, so no batch was cut short


def test_skip_bad_answers_the_rest_resumes_and_merges(yes_checkpoint, questions, tmp_path):
    question_file, images = questions
    break_images(images)
    answers = tmp_path / "a.jsonl"
    skipped_file = tmp_path / "a.skipped.json"
    assert run(yes_checkpoint, question_file, images, answers, "--skip-bad", "--decode-workers", "2") == 0
    assert [r["question_id"] for r in read_jsonl(answers)] == ["q0", "q1", "q3", "q4", "q6"]
    skipped = json.loads(skipped_file.read_text())["skipped"]
    assert [(s["question_id"], s["image"]) for s in skipped] == [
        ("q2", str(images / "2.png")),
        ("q5", str(images / "sub" / "5.jpg")),
    ]
    assert "corrupt or truncated" in skipped[0]["reason"] and "not an image" in skipped[1]["reason"]

    before = answers.read_text()  # a rerun answers nothing new and lists the same questions
    assert run(yes_checkpoint, question_file, images, answers, "--skip-bad") == 0
    assert answers.read_text() == before
    assert json.loads(skipped_file.read_text())["skipped"] == skipped

    Image.new("RGB", (20, 20), "red").save(images / "2.png")  # fixed: the next run answers it
    assert run(yes_checkpoint, question_file, images, answers, "--skip-bad") == 0
    assert [r["question_id"] for r in read_jsonl(answers)][-1] == "q2"
    assert [s["question_id"] for s in json.loads(skipped_file.read_text())["skipped"]] == ["q5"]

    shards = [tmp_path / "shards" / f"2_{k}.jsonl" for k in range(2)]
    for k, shard in enumerate(shards):
        extra = ("--skip-bad", "--num-chunks", "2", "--chunk-idx", str(k))
        assert run(yes_checkpoint, question_file, images, shard, *extra) == 0
    merged = tmp_path / "merged.jsonl"
    argv = ["--question-file", str(question_file), "--answers-file", str(merged), "--merge"]
    assert answer.main([*argv, *map(str, shards)]) == 0  # q5 is listed as skipped, not missing
    assert [r["question_id"] for r in read_jsonl(merged)] == ["q0", "q1", "q2", "q3", "q4", "q6"]
    merged_skipped = json.loads((tmp_path / "merged.skipped.json").read_text())["skipped"]
    assert [s["question_id"] for s in merged_skipped] == ["q5"]

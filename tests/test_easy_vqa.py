"""easy-vqa -> LLaVA conversion: facts from questions, captions, conversations, eval files, lmms-eval task."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

pytest.importorskip("easy_vqa")

from llava_vitsplit.data.records import parse_record  # noqa: E402
from llava_vitsplit.model.chat_templates import SHORT_ANSWER_PROMPT  # noqa: E402
from llava_vitsplit.quickstart import easy_vqa, easy_vqa_records, easy_vqa_source  # noqa: E402
from llava_vitsplit.quickstart.easy_vqa_records import caption  # noqa: E402
from llava_vitsplit.quickstart.easy_vqa_source import QA, EasyVQAError, ImageFacts, image_facts  # noqa: E402
from llava_vitsplit.quickstart.easy_vqa_task import (  # noqa: E402
    TASK_NAME,
    aggregate_accuracy,
    doc_to_text,
    normalize_answer,
    process_results,
)


def qa(question: str, answer: str, image_id: int = 0) -> QA:
    return QA(index=0, question=question, answer=answer, image_id=image_id)


def test_facts_from_open_yes_no_and_negated_questions():
    facts = image_facts(
        [
            qa("what color is the triangle?", "red", 1),  # colour answer, shape named in the question
            qa("is there not a circle in the image?", "no", 2),  # negated "no" -> a circle is present
            qa("what is the blue shape?", "rectangle", 3),  # shape answer, colour named
            qa("is no green shape present?", "yes", 3),  # negated "yes" -> green absent (consistent)
        ]
    )
    assert facts[1] == ImageFacts("red", "triangle")
    assert facts[2] == ImageFacts(None, "circle")
    assert facts[3] == ImageFacts("blue", "rectangle")


def test_facts_by_elimination_and_conflicts_name_the_image():
    questions = [qa("is there a circle?", "no", 4), qa("does the image contain a rectangle?", "no", 4)]
    assert image_facts(questions)[4].shape == "triangle"
    with pytest.raises(EasyVQAError, match=r"train image 9: questions disagree on its color"):
        image_facts([qa("what color is the shape?", "red", 9), qa("is there a red shape?", "no", 9)], "train")


def test_captions_state_only_known_facts():
    assert caption(ImageFacts("teal", "circle")) == "A teal circle."
    assert caption(ImageFacts(None, "circle")) == "A circle."
    assert caption(ImageFacts("gray", None)) == "A gray shape."
    with pytest.raises(EasyVQAError):
        caption(ImageFacts(None, None))


def test_question_types_cover_the_answer_set():
    assert easy_vqa_source.question_type(qa("is there a red shape?", "yes")) == "yes/no"
    assert easy_vqa_source.question_type(qa("what shape is present?", "triangle")) == "shape"
    assert easy_vqa_source.question_type(qa("what color is the shape?", "brown")) == "color"
    with pytest.raises(EasyVQAError, match="unknown answer 'purple'"):
        easy_vqa_source.question_type(qa("what color is the shape?", "purple"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("easy_vqa")
    paths = easy_vqa.convert(out, limit_images=6, max_turns=4)
    return out, paths


def test_conversion_writes_valid_llava_records(converted):
    out, paths = converted
    train = easy_vqa_source.load_split("train", limit_images=6)
    stage1 = json.loads(paths["stage1"].read_text())
    stage2 = json.loads(paths["stage2"].read_text())
    for index, record in enumerate(stage1 + stage2):
        sample = parse_record(record, index)  # the training data loader's own checks
        assert len(sample.images) == 1 and (paths["image_folder"] / sample.images[0]).is_file()
        assert record["conversations"][0]["value"].startswith("<image>\n")
        assert sum("<image>" in turn["value"] for turn in record["conversations"]) == 1

    # A third of stage 2 (the default caption_share) repeats stage-1 captions as chat instructions.
    questions = [r for r in stage2 if "-caption" not in r["id"]]
    captions = [r for r in stage2 if "-caption" in r["id"]]
    assert len({r["id"] for r in stage2}) == len(stage2)
    assert abs(len(captions) - len(questions) / 2) <= 1
    by_image = {r["image"]: r["conversations"] for r in stage1}
    assert all(r["conversations"] == by_image[r["image"]] for r in captions)

    # The rest holds every train question exactly once, with its answer, as <= 4-turn conversations.
    pairs = []
    for record in questions:
        turns = record["conversations"]
        assert len(turns) <= 8
        for human, gpt in zip(turns[::2], turns[1::2], strict=True):
            assert human["from"] == "human" and gpt["from"] == "gpt"
            assert human["value"].endswith(SHORT_ANSWER_PROMPT)
            question = human["value"].removeprefix("<image>\n").removesuffix(SHORT_ANSWER_PROMPT)
            pairs.append((record["image"], question, gpt["value"]))
    expected = [(f"train/{q.image_id}.png", q.question, q.answer) for q in train.questions]
    assert sorted(pairs) == sorted(expected)


def test_captions_agree_with_every_question(converted):
    _, paths = converted
    answers = defaultdict(list)
    for q in easy_vqa_source.load_split("train", limit_images=6).questions:
        answers[f"train/{q.image_id}.png"].append(q)
    stage1 = json.loads(paths["stage1"].read_text())
    assert len(stage1) >= 5
    for record in stage1:
        words = set(record["conversations"][1]["value"].rstrip(".").lower().split())
        for q in answers[record["image"]]:
            kind = easy_vqa_source.question_type(q)
            if kind != "yes/no":  # an open answer of a kind the caption names is the caption's word
                vocab = set(easy_vqa_source.SHAPES) if kind == "shape" else set(easy_vqa_source.colors())
                assert not words & vocab or words & vocab == {q.answer}, (record, q)
                continue
            q_words = set(q.question.rstrip("?").split())
            present = (q.answer == "yes") != bool(q_words & {"not", "no"})
            for vocab in (set(easy_vqa_source.SHAPES), set(easy_vqa_source.colors())):
                asked, captioned = q_words & vocab, words & vocab
                if asked and captioned:  # "is there a red shape?" is answered by a caption naming a colour
                    assert present == (asked == captioned), (record, q)


def test_eval_file_and_lmms_eval_task(converted):
    from datasets import load_dataset
    from lmms_eval.utils import load_yaml_config

    out, paths = converted
    rows = [json.loads(line) for line in paths["eval"].read_text().splitlines()]
    test = easy_vqa_source.load_split("test", limit_images=6)
    assert sorted(r["question_id"] for r in rows) == sorted(q.index for q in test.questions)
    for row in rows:
        assert row["text"] == row["question"] + SHORT_ANSWER_PROMPT
        assert row["question_type"] in easy_vqa_source.QUESTION_TYPES
        assert (paths["image_folder"] / row["image"]).is_file()

    task_dir = paths["task_dir"] / TASK_NAME
    config = load_yaml_config(str(task_dir / f"{TASK_NAME}.yaml"))
    assert config["task"] == TASK_NAME and config["dataset_path"] == "parquet"
    data = load_dataset(
        "parquet", data_files={"test": str(task_dir / config["dataset_kwargs"]["data_files"]["test"])}
    )
    docs = data["test"]
    assert [d["question_id"] for d in docs] == [r["question_id"] for r in rows]  # same (shuffled) order
    doc = docs[0]
    image = config["doc_to_visual"](doc)[0]
    assert image.size == (64, 64) and image.mode == "RGB"
    kwargs = config["lmms_eval_specific_kwargs"]["default"]
    assert config["doc_to_text"](doc, kwargs) == doc["question"] + SHORT_ANSWER_PROMPT


def test_scoring_normalises_and_splits_by_type():
    assert normalize_answer(" Yes.") == "yes" and normalize_answer("Circle!\n") == "circle"
    doc = {"question": "what shape is present?", "answer": "circle", "question_type": "shape"}
    assert doc_to_text(doc) == "what shape is present?\nAnswer the question using a single word or phrase."
    right, wrong = process_results(doc, ["Circle."]), process_results(doc, ["a circle shape"])
    assert right == {"accuracy": 1.0, "accuracy_yes_no": None, "accuracy_color": None, "accuracy_shape": 1.0}
    assert wrong["accuracy"] == 0.0
    assert aggregate_accuracy([1.0, None, 0.0, 1.0, None]) == pytest.approx(200 / 3)


def test_rerun_skips_finished_steps_and_redoes_changed_ones(converted, capsys):
    out, paths = converted
    stamp = paths["stage2"].stat().st_mtime_ns
    capsys.readouterr()
    easy_vqa.convert(out, limit_images=6, max_turns=4)
    log = capsys.readouterr().out
    assert log.count("up to date, skipped") == 7
    assert paths["stage2"].stat().st_mtime_ns == stamp
    easy_vqa.convert(out, limit_images=6, max_turns=2)  # only stage 2 depends on max_turns
    log = capsys.readouterr().out
    assert log.count("up to date, skipped") == 6
    assert max(len(r["conversations"]) for r in json.loads(paths["stage2"].read_text())) == 4


def test_balance_yes_no_equalises_answers_per_phrasing_and_keeps_open_questions():
    assert easy_vqa_source.phrasing("Is there not a Teal circle?") == "is there not a <color> <shape>?"
    questions = [
        qa("is there a red shape?", "no", 0),
        qa("is there a blue shape?", "no", 1),
        qa("what color is the shape?", "red", 0),
        qa("is there a green shape?", "yes", 2),
        qa("is there a teal shape?", "no", 3),
        qa("is there not a circle?", "yes", 0),  # a phrasing with one answer only: dropped
        qa("what shape is present?", "circle", 1),
    ]
    kept = easy_vqa_source.balance_yes_no(questions, seed=3)
    assert [q.answer for q in kept if q.answer not in ("yes", "no")] == ["red", "circle"]
    yes_no = [q for q in kept if q.answer in ("yes", "no")]
    assert sorted(q.answer for q in yes_no) == ["no", "yes"]
    assert kept == [q for q in questions if q in kept]  # original order
    assert kept == easy_vqa_source.balance_yes_no(questions, seed=3)

    train = easy_vqa_source.load_split("train", limit_images=300)
    counts = Counter(
        (easy_vqa_source.phrasing(q.question), q.answer)
        for q in easy_vqa_source.balance_yes_no(train.questions)
        if q.answer in ("yes", "no")
    )
    assert counts and all(counts[text, "yes"] == counts[text, "no"] for text, _ in counts)
    records = easy_vqa_records.stage2_records(train, caption_share=0.0, balanced=True)
    assert len(records) == len(easy_vqa_source.balance_yes_no(train.questions)) < len(train.questions)


def test_command_balances_yes_no_on_request(tmp_path, capsys):
    assert easy_vqa.main(["--out", str(tmp_path), "--limit-images", "6", "--balance-yes-no"]) == 0
    stamp = json.loads((tmp_path / easy_vqa.STEPS_DIR / "stage2.json").read_text())
    assert stamp["settings"]["balanced_yes_no"] is True
    records = json.loads((tmp_path / easy_vqa.STAGE2_FILE).read_text())
    answers = Counter(r["conversations"][1]["value"] for r in records if "-caption" not in r["id"])
    assert answers["yes"] == answers["no"] > 0
    assert "stage 2:" in capsys.readouterr().out


def test_stage2_records_one_question_each_and_no_captions_on_request():
    train = easy_vqa_source.load_split("train", limit_images=6)
    records = easy_vqa_records.stage2_records(train, max_turns=1, caption_share=0.0)
    assert len(records) == len(train.questions)
    assert all(len(r["conversations"]) == 2 for r in records)
    with pytest.raises(ValueError, match="caption_share"):
        easy_vqa_records.stage2_records(train, caption_share=1.0)
    with pytest.raises(ValueError, match="max_turns"):
        easy_vqa_records.stage2_records(train, max_turns=-1)


def test_blind_baseline_sees_one_blank_image_in_training_and_evaluation(converted, tmp_path):
    from dataclasses import replace

    from datasets import load_dataset
    from lmms_eval.utils import load_yaml_config
    from PIL import Image, ImageStat

    from llava_vitsplit.quickstart.budget import get_budget
    from llava_vitsplit.quickstart.easy_vqa_task import BLANK_IMAGE_NAME, BLANK_RGB, BLIND_TASK_NAME
    from llava_vitsplit.quickstart.pipeline import Run

    def is_blank(image: Image.Image) -> bool:
        return ImageStat.Stat(image.convert("RGB")).extrema == [(v, v) for v in BLANK_RGB]

    out, paths = converted
    # the fixture's conversion settings, so `data()` finds every conversion step done
    budget = replace(
        get_budget("smoke"), limit_images=6, max_turns=4, caption_share=easy_vqa_records.STAGE2_CAPTION_SHARE
    )
    run = Run(out_dir=tmp_path / "blind", budget=budget, variant="blind", data_dir=out, log=lambda _: None)
    run.data()
    for stage, original in (("pretrain", paths["stage1"]), ("finetune", paths["stage2"])):
        assert run.data_file(stage).parent == tmp_path / "blind" / "data"
        blind, seen = json.loads(run.data_file(stage).read_text()), json.loads(original.read_text())
        assert {r["image"] for r in blind} == {BLANK_IMAGE_NAME}
        assert [r["conversations"] for r in blind] == [r["conversations"] for r in seen]
    with Image.open(paths["image_folder"] / BLANK_IMAGE_NAME) as image:
        assert is_blank(image)

    task_dir = paths["task_dir"] / TASK_NAME
    config = load_yaml_config(str(task_dir / f"{BLIND_TASK_NAME}.yaml"))
    assert config["task"] == BLIND_TASK_NAME
    parquet = task_dir / config["dataset_kwargs"]["data_files"]["test"]
    docs = load_dataset("parquet", data_files={"test": str(parquet)})["test"]
    first, second = (config["doc_to_visual"](docs[i])[0] for i in range(2))
    assert is_blank(first) and first.tobytes() == second.tobytes() and first.size == docs[0]["image"].size

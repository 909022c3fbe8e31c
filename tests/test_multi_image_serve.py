"""Several images at inference: prompts as training renders them, chat turns, ``answer`` image lists, vLLM limits."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from llava_vitsplit.data import IMAGE_TAG, get_template, parse_record
from llava_vitsplit.data.dataset import count_image_tokens
from llava_vitsplit.serve import answer, vllm_server
from llava_vitsplit.serve.generation import (
    Conversation,
    GenerationSettings,
    render_prompt,
    stream_reply,
    user_messages,
)
from llava_vitsplit.serve.loading import load_model
from llava_vitsplit.serve.vllm_engine import images_per_prompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RED, GREEN, BLUE = (Image.new("RGB", (40, 30), c) for c in ("red", "green", "blue"))


@pytest.fixture(scope="module")
def yes_model(yes_checkpoint):
    return load_model(str(yes_checkpoint), device="cpu")


def training_text(processor, image, *turns) -> str:
    roles = ("human", "gpt")
    record = {
        "image": image,
        "conversations": [{"from": roles[i % 2], "value": t} for i, t in enumerate(turns)],
    }
    return get_template("vicuna_v1").render(parse_record(record, 0), processor.tokenizer).text


def test_a_chat_with_images_in_two_turns_renders_the_training_text(tiny_checkpoint):
    _, _, processor = tiny_checkpoint
    conversation = Conversation(images=[RED, GREEN])
    conversation.add_user("Compare them.")
    conversation.set_reply("Red, then green.")
    conversation.add_image(BLUE)  # /image in chat, an upload in the demo
    conversation.add_user("And this one?")
    conversation.set_reply("Blue.")
    rendered = processor.apply_chat_template(conversation.messages(processor.image_token), tokenize=False)
    expected = training_text(
        processor,
        ["r.png", "g.png", "b.png"],
        "<image>\n<image>\nCompare them.",
        "Red, then green.",
        "<image>\nAnd this one?",
        "Blue.",
    )
    assert rendered == expected
    assert conversation.images_in_turns() == [RED, GREEN, BLUE]


@pytest.mark.parametrize(
    ("text", "record_text"),
    [
        ("Which is larger?", "Which is larger?"),
        ("Is <image> bigger than <image>?", "Is <image> bigger than <image>?"),
    ],
)
def test_a_question_with_an_image_list_renders_as_the_training_record(tiny_checkpoint, text, record_text):
    _, _, processor = tiny_checkpoint
    prompt = render_prompt(processor, user_messages(text, 2, processor.image_token))
    record = training_text(processor, ["a.png", "b.png"], record_text, "The first.")
    assert record.startswith(prompt) and prompt.endswith("ASSISTANT:")
    ids = processor(text=[prompt], images=[RED, GREEN], return_tensors="pt")
    assert ids["pixel_values"].shape[0] == 2
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TAG)
    assert int((ids["input_ids"] == image_id).sum()) == 2 * count_image_tokens(processor)


def test_conversation_images_wait_for_a_message_and_tags_must_match(tiny_checkpoint):
    _, _, processor = tiny_checkpoint
    conversation = Conversation()
    conversation.add_user("Hello")
    conversation.add_image(RED)  # while the reply is pending: goes with the next message
    assert conversation.images_in_turns() == []
    conversation.turns.pop()  # a withdrawn message (the demo's Stop)
    with pytest.raises(ValueError, match=r"1 image\(s\) but 2 <image> tag"):
        conversation.add_user("<image> and <image>", processor.image_token)
    assert conversation.turns == []  # nothing added
    conversation.add_user("What is <image>?", processor.image_token)
    assert conversation.messages(processor.image_token)[0]["content"][0]["text"] == "What is <image>?"
    assert conversation.images_in_turns() == [RED]


def test_stream_reply_with_several_images(yes_model):
    conversation = Conversation(images=[RED, GREEN, BLUE])
    conversation.add_user("Which is red?")
    assert (
        "".join(stream_reply(yes_model, conversation, GenerationSettings(max_new_tokens=6))).strip() == "yes"
    )


@pytest.fixture
def multi_questions(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, image in (("r.png", RED), ("g.png", GREEN), ("b.png", BLUE)):
        image.save(folder / name)
    records = [
        {"question_id": 0, "text": "Which is red?", "image": ["r.png", "g.png", "b.png"]},
        {"question_id": 1, "text": "Is <image> greener than <image>?", "image": ["g.png", "b.png"]},
        {"question_id": 2, "text": "Is it red?", "image": "r.png"},
        {"question_id": 3, "text": "What is 2 plus 2?"},
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, folder, records


def answer_args(checkpoint, questions, folder, out, *extra):
    return [
        *("--model", str(checkpoint), "--question-file", str(questions), "--image-folder", str(folder)),
        *(
            "--answers-file",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "3",
            "--max-new-tokens",
            "6",
            *extra,
        ),
    ]


def test_answer_takes_image_lists(yes_checkpoint, multi_questions, tmp_path, monkeypatch):
    questions, folder, _ = multi_questions
    seen = []
    real = answer._batch_inputs

    def spy(batch, args, processor):
        prompts, images, texts = real(batch, args, processor)
        seen.append((prompts, images))
        return prompts, images, texts

    monkeypatch.setattr(answer, "_batch_inputs", spy)
    out = tmp_path / "answers.jsonl"
    assert answer.main(answer_args(yes_checkpoint, questions, folder, out)) == 0
    replies = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["question_id"], r["text"]) for r in replies] == [
        (0, "yes"),
        (1, "yes"),
        (2, "yes"),
        (3, "yes"),
    ]
    prompts, images = seen[0]
    assert [p.count("<image>") for p in prompts] == [3, 2, 1] and len(images) == 6  # in prompt order
    assert "USER: <image>\n<image>\n<image>\nWhich is red? ASSISTANT:" in prompts[0]
    assert "USER: Is <image> greener than <image>? ASSISTANT:" in prompts[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": ["r.png", 7]}, "line 1: field 'image' must be a path or a list of paths"),
        (
            {"text": "<image> only one", "image": ["r.png", "g.png"]},
            r"line 1: 2 image\(s\) but 1 <image> tag",
        ),
        ({"text": "<image>?"}, r"line 1: 0 image\(s\) but 1 <image> tag"),
    ],
)
def test_answer_refuses_bad_image_lists_before_loading(tmp_path, capsys, change, message):
    question = {"question_id": 0, "text": "Which?", **change}
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(question) + "\n")
    args = answer_args(tmp_path / "no_model", path, tmp_path, tmp_path / "a.jsonl")
    assert answer.main(args) == 2
    assert re.search(message, capsys.readouterr().err)


def test_answer_lists_a_question_with_a_bad_second_image(multi_questions, tmp_path, capsys):
    questions, folder, _ = multi_questions
    (folder / "b.png").write_bytes(b"not an image")
    assert answer.main(answer_args(tmp_path / "no_model", questions, folder, tmp_path / "a.jsonl")) == 2
    err = capsys.readouterr().err
    assert "2 question(s) have an image that cannot be used" in err
    assert "question_id 0: " in err and "question_id 1: " in err and "b.png" in err


def test_vllm_image_limit_comes_from_the_model(tiny_checkpoint):
    path, model, processor = tiny_checkpoint
    per_image = count_image_tokens(processor)
    assert images_per_prompt(str(path)) == model.config.text_config.max_position_embeddings // per_image
    assert images_per_prompt(str(path), max_model_len=6 * per_image + 5) == 6
    assert images_per_prompt(str(path), max_model_len=per_image - 1) == 1
    parser = vllm_server.build_parser()
    command = vllm_server.server_command(parser.parse_args(["--model", "m"]), 6)
    assert command[command.index("--limit-mm-per-prompt") + 1] == '{"image": 6}'
    given = parser.parse_args(["--model", "m", "--", "--limit-mm-per-prompt", '{"image": 2}'])
    assert vllm_server.server_command(given, 6).count("--limit-mm-per-prompt") == 1
    assert vllm_server._max_model_len(["--enforce-eager", "--max-model-len", "512"]) == 512
    assert vllm_server._max_model_len(["--max-model-len=256"]) == 256

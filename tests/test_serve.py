"""Shared serving helpers: image validation, device/dtype choice, prompts, streaming and batched generation."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch
from PIL import Image, ImageFile

from llava_vitsplit.serve.generation import (
    Conversation,
    GenerationSettings,
    cut_at_stop,
    generate_batch,
    prepare_inputs,
    render_prompt,
    stream_reply,
    user_messages,
)
from llava_vitsplit.serve.images import ImageLoadError, load_image
from llava_vitsplit.serve.loading import load_model, resolve_device, resolve_dtype


def write_png_header(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (with no real pixel data): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def yes_model(yes_checkpoint):
    return load_model(str(yes_checkpoint), device="cpu")


def test_load_image_accepts_photo_and_converts_to_rgb(tmp_path):
    path = tmp_path / "a.png"
    Image.new("L", (20, 10), 128).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (20, 10)


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "huge", "over_limit"])
def test_load_image_rejects_bad_files_with_named_error(tmp_path, case, monkeypatch):
    # importing lmms_eval.api.task flips PIL's process-wide switch to True: truncation must still be caught
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = tmp_path / f"{case}.png"
    if case == "text":
        path.write_text("this is not an image")
    elif case == "truncated":
        Image.new("RGB", (64, 64), "red").save(tmp_path / "full.png")
        path.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    elif case == "huge":
        write_png_header(path, 100_000, 100_000)
    elif case == "over_limit":
        Image.new("RGB", (30, 30)).save(path)
    with pytest.raises(ImageLoadError, match=f"{case}.png"):
        load_image(path, max_pixels=500 if case == "over_limit" else 40_000_000)


def test_load_image_display_name_hides_server_path(tmp_path):
    path = tmp_path / "upload_123.png"
    path.write_text("nope")
    with pytest.raises(ImageLoadError, match="cat.png") as info:
        load_image(path, display_name="cat.png")
    assert str(tmp_path) not in str(info.value)


def test_device_and_dtype_defaults():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8", torch.device("cpu"))


def test_load_model_names_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tmp_path / "nothing"), device="cpu")


def test_generation_settings_validate_and_map_to_generate_kwargs(yes_model):
    with pytest.raises(ValueError, match="top_p"):
        GenerationSettings(top_p=0)
    greedy = GenerationSettings(temperature=0.7, do_sample=False).generate_kwargs(yes_model.tokenizer)
    assert greedy["do_sample"] is False and greedy["temperature"] is None
    sampled = GenerationSettings(temperature=0.7, top_p=0.9).generate_kwargs(yes_model.tokenizer)
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.7 and sampled["top_p"] == 0.9
    with pytest.raises(ValueError, match="min_new_tokens"):
        GenerationSettings(max_new_tokens=4, min_new_tokens=5)
    forced = GenerationSettings(max_new_tokens=6, min_new_tokens=6).generate_kwargs(yes_model.tokenizer)
    assert forced["min_new_tokens"] == 6 and "min_new_tokens" not in greedy


def test_min_new_tokens_forces_the_reply_length(yes_model):
    """The "yes" model ends after one word; with min_new_tokens it generates exactly max_new_tokens."""
    prompt = render_prompt(yes_model.processor, user_messages("Hi?", 0, yes_model.processor.image_token))
    inputs = prepare_inputs(yes_model, [prompt], [])
    forced = GenerationSettings(max_new_tokens=6, min_new_tokens=6).generate_kwargs(yes_model.tokenizer)
    output = yes_model.model.generate(**inputs, **forced)  # [1, T + new]
    assert output.shape[1] - inputs["input_ids"].shape[1] == 6


def test_conversation_puts_image_in_first_user_turn(yes_model):
    conversation = Conversation(images=[Image.new("RGB", (8, 8))])
    conversation.add_user("What is it?")
    conversation.set_reply("A square.")
    conversation.add_user("What colour?")
    with pytest.raises(ValueError, match="no reply yet"):
        conversation.add_user("again")
    prompt = render_prompt(yes_model.processor, conversation.messages(yes_model.processor.image_token))
    assert prompt.count("<image>") == 1
    assert (
        prompt.index("<image>")
        < prompt.index("What is it?")
        < prompt.index("A square.")
        < prompt.index("What colour?")
    )
    assert prompt.rstrip().endswith("ASSISTANT:")


def test_cut_at_stop_uses_earliest_stop():
    assert cut_at_stop("yes ASSISTANT: no", ["ASSISTANT:", "no"]) == "yes "
    assert cut_at_stop("yes", []) == "yes"


def test_stream_and_batch_generate_the_scripted_reply(yes_model):
    conversation = Conversation(images=[Image.new("RGB", (40, 30), "red")])
    conversation.add_user("Is it red?")
    chunks = list(stream_reply(yes_model, conversation, GenerationSettings(max_new_tokens=8)))
    assert "".join(chunks).strip() == "yes"
    prompts = [
        render_prompt(yes_model.processor, user_messages("short", 1, "<image>")),
        render_prompt(yes_model.processor, user_messages("a much longer text-only question", 0, "<image>")),
        render_prompt(yes_model.processor, user_messages("another", 1, "<image>")),
    ]
    images = [Image.new("RGB", (30, 50)), Image.new("RGB", (64, 64))]
    assert generate_batch(yes_model, prompts, images, GenerationSettings(max_new_tokens=8)) == ["yes"] * 3
    cut = generate_batch(
        yes_model, prompts[:1], images[:1], GenerationSettings(max_new_tokens=8, stop=("s",))
    )
    assert cut == ["ye"]
    one_token = generate_batch(yes_model, prompts[:1], images[:1], GenerationSettings(max_new_tokens=1))
    assert one_token[0] != "yes" and "yes".startswith(one_token[0])


def test_stream_reply_reraises_generation_errors(yes_model):
    conversation = Conversation()
    conversation.add_user("hi")
    broken = GenerationSettings(max_new_tokens=4, num_beams=0)  # generate() refuses num_beams=0
    with pytest.raises(ValueError):  # raised in the worker thread, re-raised to the consumer
        list(stream_reply(yes_model, conversation, broken))


def test_load_image_from_url_and_missing_url(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    Image.new("RGB", (12, 9), "blue").save(tmp_path / "blue.png")

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert load_image(f"{base}/blue.png").size == (12, 9)
        with pytest.raises(ImageLoadError, match="could not download image .*/nope.png"):
            load_image(f"{base}/nope.png")
        with pytest.raises(ImageLoadError, match="larger than 10 bytes"):
            load_image(f"{base}/blue.png", max_bytes=10)
    finally:
        server.shutdown()
        thread.join(timeout=10)

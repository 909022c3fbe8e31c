"""``llava-vitsplit demo`` launched on 127.0.0.1 and driven with gradio_client.

One server process (one model load) serves: a multi-turn exchange about an uploaded image with
streaming and regenerate, bad or oversized uploads answered in the chat (the typed question kept),
several concurrent clients, and clear. The handlers are also driven directly: stopped replies, a
withdrawn queued message, a 48 MP photo, and the unqueued step that shows a message at once.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from llava_vitsplit.train.launch_env import free_port

gradio_client = pytest.importorskip("gradio_client")
STARTUP_TIMEOUT_S = 150
MAX_FILE_KB = 200  # the server's --max-file-size


def write_png_header(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` with no pixel data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


def last_text(history: list[dict]) -> str:
    """Text of the last chatbot message (gradio normalises content to a list of parts)."""
    parts = history[-1]["content"]
    return "".join(part.get("text", "") for part in parts) if isinstance(parts, list) else str(parts)


@pytest.fixture(scope="module")
def server(yes_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    path = yes_checkpoint
    port = free_port()
    patcher = pytest.MonkeyPatch()  # talk to 127.0.0.1 directly even where a proxy is configured
    for key in ("NO_PROXY", "no_proxy"):
        patcher.setenv(key, "127.0.0.1,localhost")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TRANSFORMERS_OFFLINE": "1",
    }
    log = (root / "server.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llava_vitsplit.cli",
            "demo",
            "--model",
            str(path),
            "--port",
            str(port),
            "--device",
            "cpu",
            "--concurrency",
            "2",
            "--max-new-tokens",
            "8",
            "--temperature",
            "0",
            "--max-file-size",
            f"{MAX_FILE_KB}kb",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"demo exited with {process.returncode}:\n{log.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("demo did not start in time")
            time.sleep(0.5)
    yield url, root, log
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=20)
    log.close()
    patcher.undo()


def client(url):
    return gradio_client.Client(url, verbose=False)


def ask(chat_client, text: str, image=None, accepted: bool = True):
    files = [gradio_client.handle_file(str(image))] if image is not None else []
    history, textbox = chat_client.predict({"text": text, "files": files}, 0.0, 1.0, 8, api_name="/chat")
    # a message taken clears the box; a refused one keeps the typed question (without the refused file)
    assert textbox["text"] == ("" if accepted else text) and textbox["files"] == []
    return history


@pytest.mark.e2e  # the demo server subprocess
def test_multi_turn_with_image_streams_and_regenerates(server):
    url, root, _ = server
    image = root / "red.png"
    Image.new("RGB", (64, 48), "red").save(image)
    session = client(url)
    history = ask(session, "Is it red?", image)
    assert [m["role"] for m in history] == ["user", "user", "assistant"]
    assert history[0]["content"][0]["type"] == "file" and last_text(history) == "yes"
    job = session.submit({"text": "Is it a square?", "files": []}, 0.0, 1.0, 8, api_name="/chat")
    history, _ = job.result(timeout=120)
    assert len(job.outputs()) > 2  # the reply arrived in several streamed updates
    assert [m["role"] for m in history] == ["user", "user", "assistant", "user", "assistant"]
    assert last_text(history) == "yes"
    regenerated = session.predict(0.7, 0.9, 8, api_name="/regenerate")
    assert len(regenerated) == len(history) and last_text(regenerated) == "yes"
    cleared, _ = session.predict(api_name="/clear")
    assert cleared == []


@pytest.mark.e2e  # the demo server subprocess
def test_the_two_steps_the_page_runs_share_the_session(server):
    url, root, _ = server
    image = root / "white.png"
    Image.new("RGB", (32, 32), "white").save(image)
    session = client(url)
    message = {"text": "Is it white?", "files": [gradio_client.handle_file(str(image))]}
    shown, box = session.predict(message, 0.0, 1.0, 8, api_name="/add_message")
    assert [m["role"] for m in shown] == ["user", "user"] and box["text"] == ""  # no reply yet
    history = session.predict(api_name="/reply")
    assert [m["role"] for m in history] == ["user", "user", "assistant"] and last_text(history) == "yes"


@pytest.mark.e2e  # the demo server subprocess
@pytest.mark.parametrize("kind", ["text", "huge"])
def test_bad_upload_is_answered_in_the_chat(server, kind):
    url, root, _ = server
    bad = root / f"bad_{kind}.png"
    if kind == "text":
        bad.write_text("this is not an image")
    else:
        write_png_header(bad, 90_000, 90_000)
    history = ask(client(url), "What is this?", bad, accepted=False)
    message = last_text(history)
    assert history[-1]["role"] == "assistant"
    assert "could not use that upload" in message and f"bad_{kind}.png" in message
    assert ("not an image" in message) if kind == "text" else ("pixels" in message)


@pytest.mark.e2e  # the demo server subprocess
def test_upload_over_max_file_size_is_refused_in_the_chat(server):
    url, root, _ = server
    big = root / "big.png"
    Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3)).save(big)  # ~264 KB, incompressible
    assert big.stat().st_size > MAX_FILE_KB * 1024
    history = ask(client(url), "What is in this photo?", big, accepted=False)
    message = last_text(history)
    assert [m["role"] for m in history] == ["user", "assistant"]  # no question was sent without it
    assert "could not use that upload" in message and "big.png" in message
    assert f"over the {MAX_FILE_KB:.1f} KB limit" in message


@pytest.mark.e2e  # the demo server subprocess
def test_concurrent_clients_are_all_answered(server):
    url, root, log = server
    image = root / "blue.png"
    Image.new("RGB", (40, 40), "blue").save(image)

    def one_user(index: int) -> str:
        return last_text(ask(client(url), f"Question {index}?", image))

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(one_user, range(4), timeout=240))
    assert answers == ["yes"] * 4
    log.seek(0)
    output = log.read()
    assert output.count("loaded model") == 1  # one model load served everyone
    assert re.search(r"Running on local URL: +http://127\.0\.0\.1:", output)  # loopback only by default


@pytest.fixture(scope="module")
def handlers(yes_checkpoint):
    from llava_vitsplit.serve.chat_engines import open_chat_engine
    from llava_vitsplit.serve.demo import DemoHandlers

    return DemoHandlers(open_chat_engine("transformers", str(yes_checkpoint), device="cpu"))


def final(generator):
    *_, last = list(generator)
    return last


def test_handlers_recover_from_failed_generation(handlers, tmp_path, monkeypatch):
    from llava_vitsplit.serve.demo import ChatSession

    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), "green").save(image)
    history, session, _ = final(
        handlers.respond({"text": "Is it green?", "files": [str(image)]}, ChatSession(), 0.0, 1.0, 8)
    )
    assert history[-1]["content"] == "yes" and session.conversation.turns == [["Is it green?", "yes"]]

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(handlers.engine.loaded.model, "generate", broken)
    history, session, _ = final(handlers.respond({"text": "Again?", "files": []}, session, 0.0, 1.0, 8))
    assert history[-1]["content"] == "Generation failed: RuntimeError: out of memory"
    assert session.conversation.turns[-1] == ["Again?", None] and not session.busy
    monkeypatch.undo()
    history, session = final(handlers.regenerate(session, 0.0, 1.0, 8))  # retries the failed reply
    assert history[-1]["content"] == "yes" and session.conversation.turns[-1] == ["Again?", "yes"]
    assert [m["role"] for m in history] == ["user", "user", "assistant", "user", "assistant"]


def test_handlers_refuse_bad_settings_and_busy_sessions(handlers):
    from llava_vitsplit.serve.demo import ChatSession

    session = ChatSession()
    message = {"text": "hello", "files": []}
    history, session, box = final(handlers.respond(message, session, 0.0, 1.0, 0))
    assert "Invalid setting: max_new_tokens" in history[-1]["content"] and box == message
    session.busy = True
    history, session, box = final(handlers.respond(message, session, 0.0, 1.0, 8))
    assert box == message and session.conversation.turns == []


def test_stopped_reply_stays_in_context_as_shown(handlers):
    from llava_vitsplit.serve.demo import ChatSession

    session = ChatSession()
    stream = handlers.respond({"text": "Is it blue?", "files": []}, session, 0.0, 1.0, 8)
    for history, _, _ in stream:  # the same session object, updated in place
        if history[-1]["role"] == "assistant" and history[-1]["content"]:
            break  # the user presses Stop once the reply is on screen
    stream.close()
    shown = session.history[-1]["content"]
    assert "yes".startswith(shown) and not session.busy  # cut after the first streamed piece
    assert session.conversation.turns == [["Is it blue?", shown]]  # the model's context is the screen
    history, session, _ = final(handlers.respond({"text": "Sure?", "files": []}, session, 0.0, 1.0, 8))
    assert [m["role"] for m in session.conversation.messages("<image>")] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert [m["content"] for m in history] == ["Is it blue?", shown, "Sure?", "yes"]


def test_stop_withdraws_a_message_still_in_the_queue(handlers):
    from llava_vitsplit.serve.demo import ChatSession

    history, session, box = handlers.add_message({"text": "Hello?", "files": []}, ChatSession(), 0.0, 1.0, 8)
    assert history == [{"role": "user", "content": "Hello?"}] and box["text"] == ""  # shown at once
    second = handlers.add_message({"text": "And?", "files": []}, session, 0.0, 1.0, 8)
    assert second[2]["text"] == "And?" and "Still answering" in second[0][-1]["content"]  # kept in the box
    assert session.history == history and session.conversation.turns == [["Hello?", None]]
    history, session = handlers.stop(session)
    assert history == [] and session.conversation.turns == [] and session.waiting is None
    assert list(handlers.reply(session))[-1][0] == []  # the queued reply step then has nothing to do


def test_a_48_megapixel_photo_is_accepted(handlers, tmp_path):
    from llava_vitsplit.serve.demo import ChatSession

    photo = tmp_path / "phone.jpg"
    Image.new("RGB", (8000, 6000), "orange").save(photo, quality=50)
    history, session, _ = final(
        handlers.respond({"text": "What is it?", "files": [str(photo)]}, ChatSession(), 0.0, 1.0, 8)
    )
    assert history[-1]["content"] == "yes" and session.conversation.images[0].size == (8000, 6000)


def test_a_submitted_message_is_shown_before_the_queue(handlers):
    from llava_vitsplit.serve.demo import build_demo

    demo = build_demo(handlers.engine, concurrency=2)
    functions = {fn.name: fn for fn in demo.fns.values()}
    show, reply = functions["add_message"], functions["reply"]
    assert not show.queue  # runs at once, even while every generation slot is taken
    assert reply.queue and reply.concurrency_id == functions["regenerate"].concurrency_id
    dependencies = {dep["id"]: dep for dep in demo.config["dependencies"]}
    assert dependencies[reply._id]["trigger_after"] == show._id


def test_bad_max_file_size_is_refused_before_loading(capsys):
    from llava_vitsplit.serve.demo import parse_file_size
    from llava_vitsplit.serve.demo_cli import main

    assert parse_file_size("200kb") == 200 * 1024 and parse_file_size("20MB") == 20 * 2**20
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "no/such/checkpoint", "--max-file-size", "lots"])
    assert exit_info.value.code == 2
    assert "--max-file-size must look like 20mb or 500kb, got 'lots'" in capsys.readouterr().err


def test_several_uploads_go_with_their_message(handlers, tmp_path):
    from llava_vitsplit.serve.demo import ChatSession

    paths = {}
    for colour in ("red", "blue", "green"):
        paths[colour] = tmp_path / f"{colour}.png"
        Image.new("RGB", (32, 24), colour).save(paths[colour])
    two = {"text": "Which is red?", "files": [str(paths["red"]), str(paths["blue"])]}
    history, session, _ = final(handlers.respond(two, ChatSession(), 0.0, 1.0, 8))
    assert [m["role"] for m in history] == ["user", "user", "user", "assistant"] and history[-1][
        "content"
    ] == "yes"
    assert (
        session.conversation.messages("<image>")[0]["content"][0]["text"] == "<image>\n<image>\nWhich is red?"
    )
    history, session, _ = final(
        handlers.respond({"text": "", "files": [str(paths["green"])]}, session, 0.0, 1.0, 8)
    )
    assert history[-1]["content"].startswith("Got it") and session.waiting is None  # waits for a question
    wrong = {"text": "Is <image> like <image>?", "files": []}
    history, session, box = final(handlers.respond(wrong, session, 0.0, 1.0, 8))
    assert "1 image(s) but 2 <image> tag(s)" in history[-1]["content"] and box["text"] == wrong["text"]
    history, session, _ = final(
        handlers.respond({"text": "Is <image> green?", "files": []}, session, 0.0, 1.0, 8)
    )
    assert history[-1]["content"] == "yes"
    assert session.conversation.messages("<image>")[2]["content"][0]["text"] == "Is <image> green?"
    assert [image.getpixel((0, 0)) for image in session.conversation.images_in_turns()] == [
        (255, 0, 0),
        (0, 0, 255),
        (0, 128, 0),
    ]

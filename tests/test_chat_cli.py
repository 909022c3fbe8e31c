"""``llava-vitsplit chat`` driven through a subprocess: multi-turn over stdin, image commands, errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from llava_vitsplit.serve import chat


def run_chat(args: list[str], stdin: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "llava_vitsplit.cli", "chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


@pytest.mark.e2e  # a chat subprocess
def test_chat_multi_turn_with_image_commands(yes_checkpoint, tmp_path):
    first, second = tmp_path / "first.png", tmp_path / "second.jpg"
    Image.new("RGB", (50, 40), "red").save(first)
    Image.new("RGB", (30, 60), "blue").save(second)
    script = "\n".join(
        [
            "Is the square red?",
            "And is it big?",
            f"/image {tmp_path / 'missing.png'}",
            "/reset",
            f"/image {second}",
            "Is it blue?",
            "Are <image> and <image> and <image> alike?",
            "/exit",
            "never read",
        ]
    )
    result = run_chat(
        [
            "--model",
            str(yes_checkpoint),
            "--image",
            str(first),
            "--device",
            "cpu",
            "--temperature",
            "0",
            "--max-new-tokens",
            "6",
        ],
        script + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ASSISTANT: yes\n") == 3
    assert "image file not found" in result.stderr and "missing.png" in result.stderr
    assert "conversation reset" in result.stderr and f"(image 2: {second}" in result.stderr
    # the reset kept the first image; with the second both go with "Is it blue?"; a third tag is refused
    assert "error: 0 image(s) but 3 <image> tag(s)" in result.stderr
    assert result.stderr.count("loaded ") == 1


def test_chat_refuses_unreadable_image_before_loading_model(yes_checkpoint, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert chat.main(["--model", str(yes_checkpoint), "--image", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.png is not an image" in err and "loaded " not in err


def test_chat_names_missing_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert chat.main(["--model", str(tmp_path / "no_such_ckpt")]) == 2
    err = capsys.readouterr().err
    assert "no_such_ckpt" in err and "config.json" in err

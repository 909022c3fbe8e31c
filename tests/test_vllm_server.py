"""``llava-vitsplit serve`` answers OpenAI chat requests with an image, and ``ENGINE=vllm`` eval scripts
run lmms-eval's ``vllm`` model on a local task (``make test-vllm``; skipped where vLLM is not installed).

The checkpoint's LM is scripted to answer "yes" (``script_reply``), so the answers are known exactly.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from _answer_cases import shape_image  # noqa: E402

from llava_vitsplit.testing.scripted import script_reply  # noqa: E402
from llava_vitsplit.testing.tiny import build_tiny_checkpoint  # noqa: E402
from llava_vitsplit.train.launch_env import free_port

pytestmark = pytest.mark.vllm

EVAL_DIR = Path(__file__).resolve().parents[1] / "eval"
VLLM_TEST_ARGS = ["--enforce-eager", "--max-model-len", "512"]
START_TIMEOUT_S = 600  # engine start on a loaded 2-core machine took over 300 s


@pytest.fixture(scope="module")
def yes_checkpoint_32(tmp_path_factory):
    """A tiny checkpoint (LM head_dim 32) that answers every prompt with "yes"; a path."""
    path, model, processor = build_tiny_checkpoint(
        tmp_path_factory.mktemp("yes32"), text_width=64, text_heads=2
    )
    script_reply(model, processor.tokenizer, "yes")
    model.save_pretrained(path)
    return path


def wait_until_healthy(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(2)
    pytest.fail(f"server not healthy after {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(yes_checkpoint_32, tmp_path_factory):
    """``(base URL, log path)`` of a running ``llava-vitsplit serve`` on the "yes" checkpoint."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, "-m", "llava_vitsplit.cli", "serve", "--model", str(yes_checkpoint_32)]
    command += ["--port", str(port), "--served-model-name", "tiny", "--", *VLLM_TEST_ARGS]
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, f"{base}/health", log)
        yield base, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def chat_completion(base: str, images: list, text: str) -> dict:
    """The server's reply to one user message with ``images`` (as data URLs) and ``text``, greedy."""
    parts = [{"type": "image_url", "image_url": {"url": data_url(image)}} for image in images]
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}],
        "temperature": 0,
        "max_tokens": 8,
    }
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_server_answers_a_chat_request_with_an_image(server):
    base, log = server
    reply = chat_completion(base, [shape_image(0)], "Is there a red circle?")
    assert reply["choices"][0]["message"]["content"].strip() == "yes"
    assert reply["usage"]["prompt_tokens"] > 16  # the 4x4 grid's 16 image tokens are in the prompt
    assert "--host 127.0.0.1" in log.read_text()  # loopback only without --public

    reply_two = chat_completion(base, [shape_image(1), shape_image(2)], "Is there a red circle?")
    assert reply_two["choices"][0]["message"]["content"].strip() == "yes"
    assert reply_two["usage"]["prompt_tokens"] - reply["usage"]["prompt_tokens"] >= 16  # a second grid
    assert '--limit-mm-per-prompt {"image": 32}' in log.read_text()  # 512 tokens / 16 per image


def chat_status(base: str, image_urls: list[str]) -> tuple[int, str]:
    """HTTP status and body of a chat request with these image URLs (errors included)."""
    content = [{"type": "image_url", "image_url": {"url": url}} for url in image_urls]
    body = {"model": "tiny", "messages": [{"role": "user", "content": [*content, {"type": "text", "text": "Hi?"}]}],
            "temperature": 0, "max_tokens": 4}  # fmt: skip
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def png_header_data_url(width: int, height: int) -> str:
    """A PNG whose header claims ``width x height`` (a decompression bomb), as a data URL."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return "data:image/png;base64," + base64.b64encode(png + chunk(b"IEND", b"")).decode()


@pytest.mark.parametrize(
    "case,urls,named",
    [
        ("corrupt", ["data:image/png;base64," + base64.b64encode(b"not a png at all").decode()], "image"),
        ("oversized", [png_header_data_url(60_000, 60_000)], "image"),
        ("not an image", ["data:text/plain;base64," + base64.b64encode(b"hello").decode()], "image"),
        ("too many", None, "image"),
    ],
)
def test_bad_images_get_a_4xx_naming_the_problem_and_the_server_keeps_serving(
    server, yes_checkpoint_32, case, urls, named
):
    base, _ = server
    if urls is None:  # one image more than the server's limit (the context over one image's tokens)
        from llava_vitsplit.serve.vllm_engine import images_per_prompt

        urls = [data_url(shape_image(0))] * (images_per_prompt(str(yes_checkpoint_32), 512) + 1)
    status, body = chat_status(base, urls)
    assert 400 <= status < 500, (case, status, body[:500])
    assert named in body.lower(), body[:500]
    status, body = chat_status(base, [data_url(shape_image(1))])  # a good request right after
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"].strip() == "yes"


def write_tiny_vqa_task(task_dir: Path) -> list[str]:
    """A 4-question yes/no task (parquet with images) scored by exact match; returns the targets."""
    import datasets

    answers = ["yes", "no", "yes", "no"]
    rows = {
        "question": [f"Is shape {i} red?" for i in range(4)],
        "answer": answers,
        "image": [shape_image(i) for i in range(4)],
    }
    task_dir.mkdir()
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(
        task_dir / "tiny_yes_no.parquet"
    )
    (task_dir / "tiny_yes_no.yaml").write_text(
        textwrap.dedent("""\
        task: vitsplit_vllm_yes_no
        dataset_path: parquet
        dataset_kwargs:
          data_files:
            test: tiny_yes_no.parquet
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: "{{question}}"
        doc_to_target: answer
        generation_kwargs:
          max_new_tokens: 8
          temperature: 0
          do_sample: false
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
            ignore_case: true
            ignore_punctuation: true
        """)
    )
    (task_dir / "utils.py").write_text('def doc_to_visual(doc):\n    return [doc["image"].convert("RGB")]\n')
    return answers


def test_eval_script_with_engine_vllm(yes_checkpoint_32, tmp_path):
    task_dir = tmp_path / "tasks"
    write_tiny_vqa_task(task_dir)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf_cache"),
        "PYTHON": sys.executable,
        "ENGINE": "vllm",
        "VLLM_MODEL_ARGS": "enforce_eager=True,max_model_len=512",
        "OUTPUT": str(out),
        "TASKS": "vitsplit_vllm_yes_no",
    }
    result = subprocess.run(
        ["bash", str(EVAL_DIR / "pope.sh"), str(yes_checkpoint_32), "--include_path", str(task_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    log = result.stdout + result.stderr
    results_files = sorted(out.rglob("*_results.json"))
    assert result.returncode == 0 and results_files, log[-4000:]
    summary = json.loads(results_files[-1].read_text())
    assert summary["results"]["vitsplit_vllm_yes_no"]["exact_match,none"] == pytest.approx(0.5)
    assert summary["n-samples"]["vitsplit_vllm_yes_no"]["effective"] == 4
    assert summary["config"]["model_backend"].startswith("lmms_eval.models.chat.vllm.VLLM")

"""The vLLM integration's parts that need no vLLM: the serve command line, prompt/image pairing, the
clear error where vLLM is missing, and the install's requirement list (run by plain ``make test``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from llava_vitsplit.serve import answer, vllm_server
from llava_vitsplit.serve.vllm_engine import prompt_inputs, vllm_dtype

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import vllm_requirements  # noqa: E402


def command(*argv: str) -> list[str]:
    return vllm_server.server_command(vllm_server.build_parser().parse_args(["--model", "ckpt/m", *argv]))


def test_server_binds_loopback_unless_public():
    default = command()
    assert default[1:3] == ["-m", "llava_vitsplit.serve.vllm_api"]  # vLLM's OpenAI server, see vllm_api
    assert default[default.index("--host") + 1] == "127.0.0.1"
    assert default[default.index("--served-model-name") + 1] == "m"
    public = command("--public", "--port", "9000", "--", "--max-model-len", "2048")
    assert public[public.index("--host") + 1] == "0.0.0.0"
    assert public[public.index("--port") + 1] == "9000"
    assert public[-2:] == ["--max-model-len", "2048"]


def test_server_process_leaves_the_pixel_limit_to_vllm(monkeypatch):
    from PIL import Image

    from llava_vitsplit.serve.images import DEFAULT_MAX_PIXELS
    from llava_vitsplit.serve.vllm_api import use_vllm_pixel_limit

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    environ: dict[str, str] = {}
    assert use_vllm_pixel_limit(environ) == DEFAULT_MAX_PIXELS and Image.MAX_IMAGE_PIXELS is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert use_vllm_pixel_limit({"VLLM_MAX_IMAGE_PIXELS": "0"}) == 0 and Image.MAX_IMAGE_PIXELS == 1000


def test_server_refuses_host_after_double_dash():
    with pytest.raises(ValueError, match="--host"):
        command("--", "--host=0.0.0.0")


def test_dtype_follows_the_transformers_path():
    assert vllm_dtype("fp32") == "float32" and vllm_dtype("bf16") == "bfloat16"
    import torch

    assert vllm_dtype("auto") == ("bfloat16" if torch.cuda.is_available() else "float32")


def test_prompt_inputs_pair_images_with_placeholders():
    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    items = list(prompt_inputs(["<image>\nA", "text only", "<image>\nB"], [red, blue], "<image>"))
    assert items[0] == {"prompt": "<image>\nA", "multi_modal_data": {"image": red}}
    assert items[1] == {"prompt": "text only"}
    assert items[2]["multi_modal_data"] == {"image": blue}
    with pytest.raises(ValueError, match="more images"):
        list(prompt_inputs(["no image"], [red], "<image>"))


def test_missing_vllm_is_a_clear_error(tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real_find_spec(name, *a)
    )
    (tmp_path / "config.json").write_text("{}")
    assert vllm_server.main(["--model", str(tmp_path)]) == 2
    assert "make vllm" in capsys.readouterr().err
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question_id": 1, "text": "hi"}\n')
    argv = ["--model", str(tmp_path), "--question-file", str(questions), "--engine", "vllm"]
    assert answer.main([*argv, "--answers-file", str(tmp_path / "a.jsonl")]) == 2
    assert "make vllm" in capsys.readouterr().err


def test_vllm_requirements_drop_torch_and_add_the_project_pins():
    pins = vllm_requirements.project_torch_pins()
    assert sorted(p.split("==")[0] for p in pins) == ["torch", "torchvision"]
    kept = vllm_requirements.runtime_requirements("torchvision")  # requires torch, numpy, pillow
    assert kept and not any(r.startswith("torch") for r in kept)


def test_vllm_install_stops_before_it_starts_on_a_full_disk(tmp_path):
    """``make vllm`` needs about 8 GB: with less free it says so and creates nothing (CI once filled its
    disk half-way through the install)."""
    venv = tmp_path / "venv-vllm"
    make = ["make", "-s", "-C", str(Path(__file__).resolve().parents[1]), "vllm", f"VLLM_VENV={venv}"]
    done = subprocess.run([*make, "VLLM_MIN_FREE_GB=1000000"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and not venv.exists()
    assert "needs about 8 GB" in done.stderr and "GB free on /" in done.stderr

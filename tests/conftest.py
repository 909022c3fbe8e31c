"""Shared pytest fixtures: offline environment and a tiny llava_vitsplit checkpoint built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def record_index_dir(tmp_path_factory):
    """Data-file indexes go to a temporary folder, not next to the shipped test data (scripts inherit it)."""
    from llava_vitsplit.data.record_index import INDEX_DIR_ENV

    if not os.environ.get(INDEX_DIR_ENV):
        os.environ[INDEX_DIR_ENV] = str(tmp_path_factory.mktemp("record_index"))
    return os.environ[INDEX_DIR_ENV]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny models: they gain nothing from more, and threads thrash
    on a busy 2-core box (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A saved tiny ViT-Split checkpoint (CLIP tower, Llama LM, byte-level BPE): ``(path, model, processor)``."""
    from llava_vitsplit.testing.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_vitsplit"))


@pytest.fixture(scope="session")
def tiny_mlp_checkpoint(tmp_path_factory):
    """The same tiny parts with LLaVA's ``mlp2x_gelu`` projector: ``(path, model, processor)``."""
    from llava_vitsplit.testing.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_mlp"), connector_type="mlp2x_gelu")


@pytest.fixture(scope="session")
def yes_checkpoint(tmp_path_factory):
    """A saved tiny checkpoint whose LM answers every prompt with exactly "yes" (serving tests); a path."""
    from llava_vitsplit.testing.scripted import script_reply
    from llava_vitsplit.testing.tiny import build_tiny_checkpoint

    path, model, processor = build_tiny_checkpoint(tmp_path_factory.mktemp("yes"))
    script_reply(model, processor.tokenizer, "yes")
    model.save_pretrained(path)
    return path

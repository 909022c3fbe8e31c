"""A Vicuna-style sentencepiece ``tokenizer.model`` loads through ``AutoTokenizer`` (the protobuf fix).

The tokenizer is trained here with ``sentencepiece`` (BPE, byte fallback, Llama ids) and saved the way
Vicuna ships it: ``tokenizer.model`` + ``tokenizer_config.json`` and no ``tokenizer.json``.
"""

from __future__ import annotations

import importlib.metadata

import pytest
import sentencepiece as spm
from packaging.version import Version
from transformers import AutoTokenizer

from llava_vitsplit.testing.tiny_parts import tokenizer_corpus
from llava_vitsplit.tokenizers import check_sentencepiece_protobuf, load_tokenizer, train_llama_sentencepiece

# No text starts with a space: there transformers' non-legacy Llama tokenizer deliberately differs from
# sentencepiece (no second dummy-prefix piece); prompts here always start with the system text.
TEXTS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "USER: What colour is the shape? ASSISTANT: It is red.</s>USER: And now?",
    "Ünïcödé, emoji 🙂 and digits 12345 fall back to bytes\n\ttabs too",
    "leading  double  spaces and trailing ",
]


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    return train_llama_sentencepiece(tmp_path_factory.mktemp("spm"), tokenizer_corpus(), vocab_size=512)


def test_installed_sentencepiece_imports_under_installed_protobuf():
    check_sentencepiece_protobuf()  # raises with the fix when the generated code and runtime disagree
    protobuf = Version(importlib.metadata.version("protobuf"))
    assert protobuf.major < 7, "wandb (pinned by lmms-eval) needs protobuf < 7"


def test_vicuna_style_folder_has_only_the_sentencepiece_model(spm_dir):
    assert (spm_dir / "tokenizer.model").is_file()
    assert not (spm_dir / "tokenizer.json").exists()
    processor = spm.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))
    assert processor.get_piece_size() == 512
    assert [processor.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert processor.id_to_piece(3) == "<0x00>"  # byte fallback pieces


def test_autotokenizer_converts_tokenizer_model_exactly(spm_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(spm_dir))
    assert type(tokenizer).__name__ == "LlamaTokenizer"
    reference = spm.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))
    for text in TEXTS:
        ids = tokenizer(text.replace("</s>", ""), add_special_tokens=False)["input_ids"]
        assert ids == reference.encode(text.replace("</s>", "")), text
        assert tokenizer.decode(ids) == reference.decode(ids)
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id == 1
    assert tokenizer.eos_token == "</s>" and tokenizer.convert_tokens_to_ids("</s>") == 2
    assert tokenizer("ok</s>", add_special_tokens=False)["input_ids"][-1] == 2  # </s> text is one token


def test_saved_tokenizer_json_reloads_identically(spm_dir, tmp_path):
    tokenizer = load_tokenizer(str(spm_dir))
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in TEXTS:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_broken_protobuf_combination_gives_one_clear_error(monkeypatch):
    import sys

    # Simulate sentencepiece 0.2.3 under protobuf 6: importing its generated module fails.
    monkeypatch.delattr(spm, "sentencepiece_model_pb2", raising=False)
    monkeypatch.setitem(sys.modules, "sentencepiece.sentencepiece_model_pb2", None)
    with pytest.raises(RuntimeError, match="sentencepiece>=0.2,<0.2.3"):
        check_sentencepiece_protobuf()

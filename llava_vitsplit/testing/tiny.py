"""Tiny random models for tests, CI and smoke runs: real architectures, toy sizes, no downloads.

- ``make_bpe_tokenizer()``: a byte-level BPE tokenizer trained offline on a small built-in corpus
  (Llama-style special tokens ``<s> </s> <unk>`` plus ``<pad>``).
- ``save_tiny_vision_tower(dir, kind)``: a vision model of any family in the backbone registry (``kind``:
  a model type or alias such as ``clip``, ``siglip``, ``dinov2``; 56 px, patch 14, 4 blocks, width 32)
  with its image processor.
- ``save_tiny_language_model(dir, tokenizer)``: a 2-layer Llama (width 32) with the tokenizer.
- ``build_tiny_checkpoint(dir, ...)``: both assembled with ``build_model`` and saved as one
  ``llava_vitsplit`` checkpoint (model + processor) loadable by ``AutoModelForImageTextToText``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from llava_vitsplit.backbones.registry import backbone_spec
from llava_vitsplit.testing.tiny_text import TINY_CORPUS, TINY_WIDTH, tiny_text_shape

TINY_IMAGE_SIZE = 56
TINY_PATCH = 14


def make_bpe_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``TINY_CORPUS`` (deterministic), wrapped as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def tiny_vision_config(kind: str = "clip", num_layers: int = 4):
    """The tiny config of the registered family ``kind`` (its spec's ``tiny_config`` of the common shape)."""
    shape = dict(
        hidden_size=TINY_WIDTH,
        intermediate_size=2 * TINY_WIDTH,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH,
    )
    spec = backbone_spec(kind)
    return AutoConfig.for_model(spec.model_type, **spec.tiny_config(shape))


def tiny_image_processor(kind: str = "clip"):
    """The family's image processor at the tiny size (resize + centre crop where the family crops)."""
    processor_cls = getattr(transformers, backbone_spec(kind).image_processor)
    size = TINY_IMAGE_SIZE
    if getattr(processor_cls, "do_center_crop", False):
        return processor_cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return processor_cls(size={"height": size, "width": size})


def save_tiny_vision_tower(
    out_dir: str | Path, kind: str = "clip", seed: int = 0, num_layers: int = 4
) -> Path:
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    model = backbone_spec(kind).model_cls()(tiny_vision_config(kind, num_layers))
    model.save_pretrained(out_dir)
    tiny_image_processor(kind).save_pretrained(out_dir)
    return out_dir


def tiny_text_config(
    vocab_size: int, tokenizer=None, width: int = TINY_WIDTH, num_heads: int = 4
) -> LlamaConfig:
    """A 2-layer Llama of ``tiny_text_shape``."""
    return LlamaConfig(**tiny_text_shape(vocab_size, tokenizer, width, num_heads))


def save_tiny_language_model(
    out_dir: str | Path, tokenizer=None, seed: int = 0, width: int = TINY_WIDTH, num_heads: int = 4
) -> Path:
    out_dir = Path(out_dir)
    tokenizer = tokenizer or make_bpe_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_text_config(len(tokenizer), tokenizer, width, num_heads))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_adapter_settings() -> dict:
    """Adapter settings that fit the tiny 4-block tower (effective depth 3 with feature layer -2)."""
    return {"num_task_layers": 1, "prior_selection": "uniform", "num_prior_layers": 2, "prior_start": 0}


def build_tiny_checkpoint(
    out_dir: str | Path,
    *,
    kind: str = "clip",
    connector_type: str = "vitsplit",
    adapter: dict | None = None,
    fusion_output: str = "vision_mlp",
    tokenizer=None,
    seed: int = 0,
    text_width: int = TINY_WIDTH,
    text_heads: int = 4,
    llm_family: str | None = None,
):
    """Build and save a complete tiny checkpoint; returns ``(path, model, processor)``.

    ``text_width`` / ``text_heads`` size the LM (vLLM tests use 64 / 2: head_dim 32); ``llm_family``
    (a registered LLM family) builds that family's tiny LM and tokenizer instead of the Llama one.
    """
    from llava_vitsplit.model.builder import build_model
    from llava_vitsplit.testing.llm_families import save_tiny_family_lm

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as parts:
        vision_dir = save_tiny_vision_tower(Path(parts) / "vision", kind, seed)
        lm_dir = (
            save_tiny_family_lm(Path(parts) / "lm", llm_family, seed, text_width, text_heads)
            if llm_family
            else save_tiny_language_model(Path(parts) / "lm", tokenizer, seed, text_width, text_heads)
        )
        model, processor = build_model(
            str(vision_dir),
            str(lm_dir),
            connector_type=connector_type,
            adapter=adapter if adapter is not None else tiny_adapter_settings(),
            fusion_output=fusion_output,
            seed=seed,
        )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir, model, processor

"""Tiny offline stand-ins for each registered LLM family: a byte-level BPE tokenizer carrying the family's
special tokens and its released chat template, and a 2-layer random decoder of the family's architecture.

``make_family_tokenizer("qwen3")`` tokenizes like a real Qwen3 tokenizer where it matters for masks:
``<|im_start|>``, ``<|im_end|>`` and ``<think>`` are single tokens, BOS/EOS/pad are the released ones,
and ``apply_chat_template`` runs the stored released template. ``save_tiny_family_lm(dir, "gemma3")``
writes a ``Gemma3ForCausalLM`` folder (config, weights, tokenizer) that ``--model_name_or_path`` takes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from llava_vitsplit.llms import LLMFamilySpec, llm_family
from llava_vitsplit.testing.tiny_text import TINY_CORPUS, TINY_WIDTH, tiny_text_shape

FAMILY_CORPUS = [
    *TINY_CORPUS,
    "You are a helpful assistant. Be brief. What colour is it? It is red.",
    "数字 123 和 中文 回答 🙂 🚀 emoji 4567",
]
NON_SPECIAL = ("<think>", "</think>")  # added tokens, not special, as in Qwen3's tokenizer


def family_tokens(spec: LLMFamilySpec) -> list[str]:
    """Every token text the family's tokenizer must hold as one token."""
    named = [t for t in spec.pad_tokens if t not in ("eos_token", "unk_token")]
    tokens = [*spec.special_tokens.values(), *spec.marker_tokens, *spec.stop_tokens, *named]
    if spec.end_of_turn:
        tokens.append(spec.end_of_turn)
    return list(dict.fromkeys(tokens))


def make_family_tokenizer(name: str | LLMFamilySpec, vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``FAMILY_CORPUS`` with the family's tokens and template (see above)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    spec = llm_family(name) if isinstance(name, str) else name
    tokens = family_tokens(spec)
    special = [t for t in tokens if t not in NON_SPECIAL]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(FAMILY_CORPUS * 4, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in tokens if t in NON_SPECIAL])
    template = None if spec.name == "vicuna_v1" else spec.chat_template  # Vicuna ships none
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **spec.special_tokens)
    if spec.tokenizer_adds_bos:
        add_bos_post_processor(tokenizer)
    return tokenizer


def add_bos_post_processor(tokenizer: PreTrainedTokenizerFast) -> None:
    """Prepend BOS when ``add_special_tokens`` (Llama, Gemma and Vicuna tokenizers do; Qwen's do not)."""
    from tokenizers import processors

    bos = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_token_id)]
    )


def tiny_family_config(name: str, tokenizer, width: int = TINY_WIDTH, num_heads: int = 4):
    """A 2-layer config of the family's first model type, sized like the other tiny models."""
    spec = llm_family(name)
    shape = tiny_text_shape(len(tokenizer), tokenizer, width, num_heads)
    return AutoConfig.for_model(spec.model_types[0], **spec.tiny_config(shape))


def save_tiny_family_lm(
    out_dir: str | Path, name: str, seed: int = 0, width: int = TINY_WIDTH, num_heads: int = 4
) -> Path:
    """A tiny random causal LM of family ``name`` with its tokenizer, saved as a hub-style folder."""
    out_dir = Path(out_dir)
    tokenizer = make_family_tokenizer(name)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_family_config(name, tokenizer, width, num_heads))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir

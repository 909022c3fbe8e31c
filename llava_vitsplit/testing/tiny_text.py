"""The common shape of the tiny test decoders and the text their tokenizers are trained on."""

from __future__ import annotations

TINY_WIDTH = 32
TINY_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "USER: What colour is the shape? ASSISTANT: The shape is red.",
    "What shape is in the image? A blue circle on a white background.",
    "Is there a triangle? Yes. Is there a square? No. Answer the question using a single word or phrase.",
    "green yellow purple orange gray brown black white teal red blue circle square triangle rectangle",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9",
]


def tiny_text_shape(vocab_size: int, tokenizer=None, width: int = TINY_WIDTH, num_heads: int = 4) -> dict:
    """The common 2-layer decoder shape; head_dim is ``width // num_heads`` (vLLM's CPU attention needs
    it >= 32), token ids from ``tokenizer``."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=512,
        bos_token_id=getattr(tokenizer, "bos_token_id", 1),
        eos_token_id=getattr(tokenizer, "eos_token_id", 2),
        pad_token_id=getattr(tokenizer, "pad_token_id", None),
    )

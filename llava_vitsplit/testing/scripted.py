"""Give a (tiny) checkpoint's language model a fixed answer, for end-to-end tests of the serving paths.

:func:`script_reply` rewrites the LM weights so that greedy decoding answers every prompt with exactly
``reply`` followed by EOS: each decoder layer's output projections are zeroed (the residual stream at a
position is then just its token embedding), every token embeds to the basis vector ``e_0`` except the
reply's own tokens ``t_1..t_k``, which embed to ``e_1..e_k``, and the LM head maps ``e_0 -> t_1``,
``e_i -> t_{i+1}`` and ``e_k -> EOS``. A model with tied input/output embeddings (Gemma-3) is untied
first (its configs then say ``tie_word_embeddings=False``, so the saved checkpoint reloads untied): one
matrix cannot both embed ``t_i`` to ``e_i`` and map ``e_0`` to ``t_1``. The vision tower and connector
are untouched (their outputs are still computed and placed at the image positions), so the whole pipeline
runs; only the answer is known.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def script_reply(model, tokenizer, reply: str) -> list[int]:
    """Make ``model`` (a Llava-style model with a Llama-like LM: Llama, Qwen2/3, Gemma-3 text) answer
    ``reply`` + EOS; returns its token ids."""
    tokens = tokenizer.encode(reply, add_special_tokens=False)
    if not tokens or len(set(tokens)) != len(tokens) or tokenizer.eos_token_id in tokens:
        raise ValueError(f"reply {reply!r} must tokenise to distinct non-EOS tokens, got {tokens}")
    language_model = model.model.language_model
    embed = language_model.embed_tokens.weight  # [V, D]
    head = model.lm_head.weight  # [V, D]
    if embed.data_ptr() == head.data_ptr():
        head = untie_output_embeddings(model)
    if len(tokens) + 1 > embed.shape[1]:
        raise ValueError(f"reply {reply!r} has {len(tokens)} tokens; the model width is {embed.shape[1]}")
    for layer in language_model.layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    embed.zero_()
    embed[:, 0] = 1.0
    for position, token in enumerate(tokens, start=1):
        embed[token] = 0.0
        embed[token, position] = 1.0
    language_model.norm.weight.fill_(1.0)  # Gemma's norm scales by 1 + weight: 2, still positive
    head.zero_()
    for position, token in enumerate([*tokens, tokenizer.eos_token_id]):
        head[token, position] = 10.0
    return tokens


def untie_output_embeddings(model) -> torch.Tensor:
    """Give ``model.lm_head`` its own copy of the tied embedding matrix and record it in the configs."""
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    return model.lm_head.weight  # [V, D]

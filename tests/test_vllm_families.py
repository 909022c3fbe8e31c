"""vLLM serves every modern LLM family's tiny checkpoint with the transformers path's greedy answers.

Tiny Llama-3, Qwen2.5, Qwen3 and Gemma-3 (text) checkpoints with each family's tokenizer tokens and released
template (head_dim 32 for vLLM's CPU attention): the prompts are rendered by the saved processor (Qwen3
non-thinking, a template-written BOS not doubled) and vLLM's greedy replies equal ``generate_batch``'s, with
and without an image. One engine per family (``make test-vllm``).
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from _answer_cases import flat, question_cases  # noqa: E402

from llava_vitsplit.serve.generation import GenerationSettings, generate_batch  # noqa: E402
from llava_vitsplit.serve.loading import load_model  # noqa: E402
from llava_vitsplit.serve.vllm_engine import VLLMEngine, prompt_inputs  # noqa: E402
from llava_vitsplit.testing.tiny import build_tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.vllm

ENGINE_OPTIONS = {"enforce_eager": True, "max_model_len": 512}
SETTINGS = GenerationSettings(max_new_tokens=8)


@pytest.mark.parametrize("family", ["gemma3", "llama3", "qwen2_5", "qwen3"])
def test_vllm_greedy_equals_transformers_for_each_family(family, tmp_path):
    # seed 1: seed 0's random Llama-3 has a near-tie (top-2 logit gap 0.0015) that fp32 kernels may flip
    path, _, _ = build_tiny_checkpoint(
        tmp_path / family, text_width=64, text_heads=2, llm_family=family, seed=1
    )
    loaded = load_model(str(path), device="cpu", dtype="fp32")
    prompts, images = question_cases(loaded.processor, 4)  # question 3 is text-only
    reference = [
        generate_batch(loaded, [p], row, SETTINGS)[0] for p, row in zip(prompts, images, strict=True)
    ]
    engine = VLLMEngine.open(str(path), dtype="fp32", **ENGINE_OPTIONS)
    try:
        assert engine.generate(prompts, flat(images), SETTINGS) == reference
        # the prompt token ids vLLM runs equal the processor's (one BOS), with and without an image
        items = list(prompt_inputs([engine.vllm_prompt(p) for p in prompts], flat(images), "<image>"))
        outputs = engine.llm.generate(items, use_tqdm=False)
        for prompt, row, out in zip(prompts, images, outputs, strict=True):
            expected = loaded.processor(text=prompt, images=row or None)["input_ids"][0]
            assert list(out.prompt_token_ids) == list(expected)
    finally:
        engine.close()

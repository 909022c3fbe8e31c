"""Transformers path: greedy answers are the same one question at a time and in batches of 16.

(Left padding, the image-token merge and the attention mask must not let batch neighbours change an
answer; another LLaVA implementation lost 11 ScienceQA points at batch size 2.)
"""

from __future__ import annotations

import pytest
from _answer_cases import flat, question_cases

from llava_vitsplit.serve.generation import GenerationSettings, generate_batch
from llava_vitsplit.serve.loading import load_model


@pytest.mark.parametrize("fixture", ["tiny_checkpoint", "tiny_mlp_checkpoint"])
def test_batch_of_16_equals_one_at_a_time(request, fixture):
    path = request.getfixturevalue(fixture)[0]
    loaded = load_model(str(path), device="cpu", dtype="fp32")
    prompts, images = question_cases(loaded.processor, 16)
    settings = GenerationSettings(max_new_tokens=8)
    single = [generate_batch(loaded, [p], row, settings)[0] for p, row in zip(prompts, images, strict=True)]
    batched = generate_batch(loaded, prompts, flat(images), settings)
    assert batched == single
    assert len(set(single)) > 1  # the answers depend on the question: a constant model would prove nothing

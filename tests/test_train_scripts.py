"""The real ``scripts/pretrain.sh`` -> ``scripts/finetune.sh`` (and ``finetune_lora.sh`` + ``merge-lora``)
on tiny random parts, with DeepSpeed ZeRO-2 (stage 1) and ZeRO-3 (stage 2) on the CPU in one process.

The parts are a tiny CLIP tower and a tiny Llama whose tokenizer is a sentencepiece ``tokenizer.model``
(no ``tokenizer.json``), like Vicuna. Each script runs once per session and the tests share the runs.
The first DeepSpeed run JIT-builds DeepSpeed's shared-memory op (~95 s, cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from _script_runs import ROOT, SEED, SHIPPED_DATA, free_port, losses, run_script, script_env, tiny_recipe
from safetensors.torch import load_file

from llava_vitsplit.model.chat_templates import VICUNA_V1_SYSTEM
from llava_vitsplit.testing.tiny_parts import save_tiny_parts, tiny_adapter_args
from llava_vitsplit.train.connector_io import CONNECTOR_CONFIG, CONNECTOR_WEIGHTS
from llava_vitsplit.train.model_setup import BuildRecipe, build_from_recipe

pytestmark = pytest.mark.e2e

ADAPTER_ARGS = tiny_adapter_args()
STAGE2_STEPS = 16  # 32 samples / batch 4 x 2 epochs
TOWER, LLM, CONNECTOR = (
    "model.vision_tower.",
    ("model.language_model.", "lm_head."),
    "model.multi_modal_projector.",
)


@pytest.fixture(scope="session")
def parts(tmp_path_factory):
    return save_tiny_parts(tmp_path_factory.mktemp("train_parts"), SHIPPED_DATA, seed=SEED)


@pytest.fixture(scope="session")
def stage1(parts, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1") / "run"
    env = script_env(
        parts, DATA_PATH=SHIPPED_DATA / "pretrain.json", OUTPUT_DIR=out, SAVE_STEPS=6, LEARNING_RATE="2e-3"
    )
    run_script("pretrain.sh", env, *ADAPTER_ARGS, log=out.parent / "log.txt")
    return out


def stage2_env(parts, stage1, out, **overrides):
    settings = {
        "DATA_PATH": SHIPPED_DATA / "finetune.json",
        "PRETRAIN_DIR": stage1,
        "OUTPUT_DIR": out,
        "NUM_EPOCHS": 2,
        "LEARNING_RATE": "5e-3",
        "TASK_HEAD_LR_MULTIPLIER": "0.5",
        "SAVE_STEPS": 4,
        "SAVE_TOTAL_LIMIT": 2,
    }
    return script_env(parts, **{**settings, **overrides})


@pytest.fixture(scope="session")
def stage2(parts, stage1, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage2") / "run"
    run_script("finetune.sh", stage2_env(parts, stage1, out), log=out.parent / "log.txt")
    return out


@pytest.fixture(scope="session")
def start_weights(parts):
    """The model every run starts from (the build is seeded, so this is bit-identical to the runs' start)."""
    recipe = tiny_recipe(parts)
    model, _ = build_from_recipe(recipe)
    return {k: v.clone() for k, v in model.state_dict().items()}


def changed(before: dict, after: dict, prefixes) -> tuple[int, int]:
    keys = [k for k in after if k.startswith(prefixes)]
    assert keys, prefixes
    return sum(not torch.equal(before[k], after[k]) for k in keys), len(keys)


def test_stage1_trains_only_the_connector(stage1, start_weights):
    assert (stage1 / CONNECTOR_WEIGHTS).is_file() and (stage1 / CONNECTOR_CONFIG).is_file()
    assert not (stage1 / "model.safetensors").exists()  # stage 1 saves the connector alone
    after = load_file(str(stage1 / "checkpoint-6" / "model.safetensors"))  # the full model at the last step
    assert changed(start_weights, after, TOWER)[0] == 0
    assert changed(start_weights, after, LLM)[0] == 0
    n_changed, n = changed(start_weights, after, CONNECTOR)
    assert n_changed == n, "every connector tensor (task head included) should have trained"
    connector = load_file(str(stage1 / CONNECTOR_WEIGHTS))
    assert connector.keys() == {k[len(CONNECTOR) :] for k in after if k.startswith(CONNECTOR)}
    assert all(torch.equal(v, after[CONNECTOR + k]) for k, v in connector.items())
    settings = json.loads((stage1 / CONNECTOR_CONFIG).read_text())
    assert settings["connector_type"] == "vitsplit" and settings["adapter"]["num_task_layers"] == 1


def test_stage2_trains_llm_and_connector_never_the_tower(stage1, stage2, start_weights):
    after = load_file(str(stage2 / "model.safetensors"))
    assert changed(start_weights, after, TOWER)[0] == 0
    n_changed, n = changed(start_weights, after, LLM)
    assert n_changed == n
    stage1_connector = {CONNECTOR + k: v for k, v in load_file(str(stage1 / CONNECTOR_WEIGHTS)).items()}
    assert changed(stage1_connector, after, CONNECTOR)[0] == len(stage1_connector)


def test_stage2_loss_goes_down_on_the_memorisable_set(stage2):
    curve = losses(stage2)
    assert sorted(curve) == list(range(1, STAGE2_STEPS + 1))
    first = sum(curve[s] for s in range(1, 5)) / 4
    last = sum(curve[s] for s in range(STAGE2_STEPS - 3, STAGE2_STEPS + 1)) / 4
    assert last < first - 1.0, curve  # nats; starts near ln(vocab) = 6.2


def test_stage2_checkpoint_loads_with_auto_classes_and_generates(stage2):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import llava_vitsplit  # noqa: F401

    model = AutoModelForImageTextToText.from_pretrained(str(stage2)).eval()
    processor = AutoProcessor.from_pretrained(str(stage2))
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.open(SHIPPED_DATA / "images" / "00_red_circle.png")
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_killed_run_resumes_with_the_same_losses(parts, stage1, stage2, tmp_path):
    out = tmp_path / "run"
    env = stage2_env(parts, stage1, out)
    with open(tmp_path / "killed.txt", "w") as log:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "finetune.sh")],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        checkpoint = out / "checkpoint-4" / "trainer_state.json"
        deadline = time.monotonic() + 400
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert checkpoint.exists(), (tmp_path / "killed.txt").read_text()[-3000:]
    for ckpt in out.glob("checkpoint-*"):  # atomic saves: no half-written checkpoint is ever visible
        assert (ckpt / "trainer_state.json").is_file()
    resumed_env = stage2_env(parts, stage1, out, MASTER_PORT=free_port())
    run_script(
        "finetune.sh",
        resumed_env,
        "--resume_from_checkpoint",
        str(out / "checkpoint-4"),
        log=tmp_path / "resumed.txt",
    )
    expected, got = losses(stage2), losses(out)
    assert sorted(got) == sorted(expected)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-5), (step, got, expected)


def test_lora_run_merges_into_a_plain_checkpoint(parts, stage1, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from llava_vitsplit.cli import main as cli

    out = tmp_path / "lora"
    env = stage2_env(parts, stage1, out, NUM_EPOCHS=1, SAVE_STEPS=1000, LORA_R=4, LORA_ALPHA=8)
    run_script("finetune_lora.sh", env, log=tmp_path / "lora.txt")
    assert (out / "adapter_model.safetensors").is_file() and (out / "llava_vitsplit_recipe.json").is_file()
    assert cli(["merge-lora", str(out), str(tmp_path / "merged")]) == 0

    merged = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "merged")).eval()
    assert not any("lora" in k for k in merged.state_dict())
    base, processor = build_from_recipe(BuildRecipe.load(out))
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    prompt = f"{VICUNA_V1_SYSTEM} USER: <image>\nWhat? ASSISTANT:"
    from PIL import Image

    inputs = processor(
        images=[Image.open(sorted((SHIPPED_DATA / "images").glob("*.png"))[5])],
        text=[prompt],
        return_tensors="pt",
    )
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, peft_model(**inputs).logits, rtol=1e-4, atol=1e-4)
    start = build_from_recipe(BuildRecipe.load(out))[0].state_dict()
    after = merged.state_dict()
    assert changed(start, after, TOWER)[0] == 0
    assert changed(start, after, ("model.language_model.layers.",))[0] > 0  # LoRA deltas merged in


@pytest.mark.slow
def test_zero3_offload_trains_with_cpu_adam(parts, stage1, tmp_path):
    """ZeRO-3 with optimizer + parameter offload (the 40 GB-card config); JIT-builds DeepSpeed's CPU Adam."""
    out = tmp_path / "offload"
    env = stage2_env(parts, stage1, out, DEEPSPEED_CONFIG="./scripts/zero3_offload.json", SAVE_STEPS=1000)
    run_script("finetune.sh", env, "--max_steps", "3", log=tmp_path / "offload.txt")
    curve = losses(out)
    assert sorted(curve) == [1, 2, 3]
    after = load_file(str(out / "model.safetensors"))
    stage1_connector = {CONNECTOR + k: v for k, v in load_file(str(stage1 / CONNECTOR_WEIGHTS)).items()}
    assert changed(stage1_connector, after, CONNECTOR)[0] > 0

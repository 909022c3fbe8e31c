"""Training pieces in-process (no launcher): argument resolution, stage policy, lr groups, connector I/O."""

from __future__ import annotations

import json

import pytest
import torch
from _script_runs import SHIPPED_DATA
from transformers import TrainingArguments as HfTrainingArguments

from llava_vitsplit.adapter import AdapterConfig
from llava_vitsplit.testing.tiny_parts import save_tiny_parts, tiny_adapter_args
from llava_vitsplit.train.arguments import parse_args
from llava_vitsplit.train.connector_io import CONNECTOR_CONFIG, load_connector, save_connector
from llava_vitsplit.train.model_setup import resolve_recipe, setup_model
from llava_vitsplit.train.trainer import LlavaViTSplitTrainer

ADAPTER = tiny_adapter_args()


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return save_tiny_parts(tmp_path_factory.mktemp("unit_parts"), SHIPPED_DATA)


def args_for(parts, tmp_path, *extra):
    return parse_args(
        [
            "--model_name_or_path", str(parts["llm"]),
            "--vision_tower", str(parts["vision"]),
            "--data_path", str(SHIPPED_DATA / "finetune.json"),
            "--output_dir", str(tmp_path / "out"),
            "--report_to", "none",
            *ADAPTER,
            *extra,
        ]
    )  # fmt: skip


def trainable(model, prefix):
    params = [p for n, p in model.named_parameters() if n.startswith(prefix)]
    assert params, prefix
    return {p.requires_grad for p in params}


def test_stage_policy_per_stage(parts, tmp_path):
    model, _, _, version = setup_model(*args_for(parts, tmp_path, "--tune_mm_mlp_adapter", "True"))
    assert version == "plain"
    assert trainable(model, "model.multi_modal_projector.") == {True}
    assert trainable(model, "model.multi_modal_projector.adapter.task_head.") == {True}
    assert trainable(model, "model.language_model.") == {False} and trainable(model, "lm_head.") == {False}
    assert trainable(model, "model.vision_tower.") == {False}

    model, _, _, version = setup_model(*args_for(parts, tmp_path))
    assert version == "vicuna_v1"
    assert trainable(model, "model.multi_modal_projector.") == {True}
    assert trainable(model, "model.language_model.") == {True} and trainable(model, "lm_head.") == {True}
    assert trainable(model, "model.vision_tower.") == {False}


def test_connector_init_is_identical_across_builds(parts, tmp_path):
    """Every rank builds with the same seed, so every rank starts from the same connector."""
    first, _, _, _ = setup_model(*args_for(parts, tmp_path, "--tune_mm_mlp_adapter", "True", "--seed", "5"))
    torch.manual_seed(1234)  # a rank with different global RNG state
    torch.rand(100)
    second, _, _, _ = setup_model(*args_for(parts, tmp_path, "--tune_mm_mlp_adapter", "True", "--seed", "5"))
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_task_head_learning_rate_multiplier(parts, tmp_path):
    model_args, data_args, training_args = args_for(
        parts,
        tmp_path,
        "--learning_rate",
        "2e-5",
        "--mm_projector_lr",
        "1e-3",
        "--task_head_lr_multiplier",
        "0.1",
        "--deform_offset_lr_multiplier",
        "0.5",
    )
    model, processor, _, _ = setup_model(model_args, data_args, training_args)
    trainer = LlavaViTSplitTrainer(model=model, args=training_args, processing_class=processor)
    optimizer = trainer.create_optimizer()
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(round(group["lr"], 12), set()).update(id(p) for p in group["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    task_head = {i for i in by_lr[1e-4]}
    assert task_head and all(".task_head." in names[i] for i in task_head)
    offsets = by_lr[5e-4]
    assert offsets and all(".spatial.offset." in names[i] for i in offsets)
    assert all("multi_modal_projector." in names[i] and ".task_head." not in names[i] for i in by_lr[1e-3])
    assert all("multi_modal_projector." not in names[i] for i in by_lr[2e-5])
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(v) for v in by_lr.values()) == n_trainable


def test_connector_roundtrip_and_mismatch_errors(parts, tmp_path):
    model, _, recipe, _ = setup_model(*args_for(parts, tmp_path, "--tune_mm_mlp_adapter", "True"))
    with torch.no_grad():
        for p in model.model.multi_modal_projector.parameters():
            p.add_(1.0)
    save_connector(
        model, tmp_path / "s1", vision_tower=recipe.vision_tower, language_model=recipe.language_model
    )
    fresh, _, _, _ = setup_model(
        *args_for(parts, tmp_path, "--pretrain_mm_mlp_adapter", str(tmp_path / "s1"))
    )
    a, b = model.model.multi_modal_projector.state_dict(), fresh.model.multi_modal_projector.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Stage 2 with settings that contradict the stage-1 connector fails before any training.
    model_args, data_args, _ = parse_args(
        ["--data_path", "x.json", "--pretrain_mm_mlp_adapter", str(tmp_path / "s1"), "--num_task_layers", "2"]
    )
    with pytest.raises(ValueError, match="disagree"):
        resolve_recipe(model_args, data_args, 0)
    settings = json.loads((tmp_path / "s1" / CONNECTOR_CONFIG).read_text())
    settings["fusion_output"] = "llm"
    (tmp_path / "s1" / CONNECTOR_CONFIG).write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="fusion_output"):
        load_connector(fresh, tmp_path / "s1")
    with pytest.raises(FileNotFoundError, match="stage-1 connector not found"):
        load_connector(fresh, tmp_path / "nowhere")


def test_stage2_takes_connector_settings_from_stage1(parts, tmp_path):
    model, _, recipe, _ = setup_model(*args_for(parts, tmp_path, "--tune_mm_mlp_adapter", "True"))
    save_connector(
        model, tmp_path / "s1", vision_tower=recipe.vision_tower, language_model=recipe.language_model
    )
    model_args, data_args, _ = parse_args(
        ["--data_path", "x.json", "--pretrain_mm_mlp_adapter", str(tmp_path / "s1"), "--report_to", "none"]
    )
    resolved, version = resolve_recipe(model_args, data_args, 0)
    normalised = AdapterConfig.from_dict(recipe.adapter).to_dict()
    assert resolved.adapter == normalised and resolved.fusion_output == "vision_mlp"
    assert resolved.vision_tower == str(parts["vision"]) and version == "auto"


def test_preset_fills_unset_settings_and_llava_argument_names_parse():
    model_args, data_args, training_args = parse_args(
        ["--preset", "llava-v1.5-7b", "--data_path", "d.json", "--warmup_ratio", "0.03", "--lora_enable", "True",
         "--group_by_modality_length", "True", "--report_to", "none", "--output_dir", "/tmp/x"]
    )  # fmt: skip
    recipe, version = resolve_recipe(model_args, data_args, 0)
    assert recipe.vision_tower == "openai/clip-vit-large-patch14-336"
    assert recipe.language_model == "lmsys/vicuna-7b-v1.5"
    assert recipe.adapter["prior_layers"] == [22] and recipe.fusion_output == "llm"
    assert version == "auto" and recipe.image_aspect_ratio == "pad"  # stage 2: the LLM's family
    assert isinstance(training_args, HfTrainingArguments) and training_args.warmup_steps == 0.03
    with pytest.raises(SystemExit):
        parse_args(["--output_dir", "/tmp/x"])  # no --data_path


def test_continue_from_a_saved_checkpoint(tiny_checkpoint, tmp_path):
    path, saved_model, _ = tiny_checkpoint
    model_args, data_args, training_args = parse_args(
        [
            "--model_name_or_path",
            str(path),
            "--data_path",
            "d.json",
            "--output_dir",
            str(tmp_path),
            "--report_to",
            "none",
        ]
    )
    model, processor, recipe, version = setup_model(model_args, data_args, training_args)
    assert recipe.base_checkpoint == str(path) and version == "vicuna_v1"
    reference = saved_model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    assert trainable(model, "model.vision_tower.") == {False}
    assert trainable(model, "model.language_model.") == {True}
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id

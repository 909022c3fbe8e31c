"""The freezing table drives what trains: ``requires_grad`` per stage for ViT-Split, the MLP baseline and
LoRA, and the optimizer's learning-rate groups taken by module, checked against name-based expectations."""

from __future__ import annotations

import pytest
from _script_runs import SHIPPED_DATA

from llava_vitsplit.stages import CONNECTOR_PARTS, LORA, STAGES, model_components
from llava_vitsplit.testing.tiny_parts import save_tiny_parts, tiny_adapter_args
from llava_vitsplit.train.arguments import parse_args
from llava_vitsplit.train.model_setup import setup_model
from llava_vitsplit.train.trainer import LlavaViTSplitTrainer

STAGE_FLAGS = {
    "pretrain": ["--tune_mm_mlp_adapter", "True"],
    "finetune": [],
    "finetune_lora": ["--lora_enable", "True", "--lora_r", "4", "--lora_alpha", "8"],
}
CONNECTORS = {
    "vitsplit": [*tiny_adapter_args(), "--conv_type", "deformable"],
    "vitsplit_llm": [*tiny_adapter_args("llm"), "--conv_type", "plain"],
    "mlp": ["--mm_projector_type", "mlp2x_gelu"],
}
LRS = ["--learning_rate", "2e-5", "--connector_lr", "1e-3", "--task_head_lr_multiplier", "0.1",
       "--deform_offset_lr_multiplier", "0.5", "--weight_decay", "0.1"]  # fmt: skip


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return save_tiny_parts(tmp_path_factory.mktemp("freezing_parts"), SHIPPED_DATA)


def build(parts, tmp_path, connector: str, stage: str, *extra: str):
    args = parse_args(
        ["--model_name_or_path", str(parts["llm"]), "--vision_tower", str(parts["vision"]),
         "--data_path", "d.json", "--output_dir", str(tmp_path), "--report_to", "none",
         *CONNECTORS[connector], *STAGE_FLAGS[stage], *extra]
    )  # fmt: skip
    model, processor, _, _ = setup_model(*args)
    return model, processor, args[2]


PREFIXES = {  # parameter name prefix -> component, from the checkpoint layout alone (not stages.py)
    "model.vision_tower.": "vision_tower",
    "model.multi_modal_projector.adapter.task_head.": "task_head",
    "model.multi_modal_projector.adapter.prior_head.": "prior_head",
    "model.multi_modal_projector.adapter.prior_gate.": "prior_head",
    "model.multi_modal_projector.adapter.fusion.": "fusion",
    "model.multi_modal_projector.": "mlp",  # the MLP after a vision-width fusion, or the baseline
    "model.language_model.": "language_model",
    "lm_head.": "lm_head",
}


def component_of(name: str) -> str:
    return next(c for prefix, c in PREFIXES.items() if name.startswith(prefix))


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_requires_grad_follows_the_table(parts, tmp_path, connector, stage):
    model, _, _ = build(parts, tmp_path, connector, stage)
    seen = set()
    for name, param in model.named_parameters():
        component = component_of(name)
        seen.add(component)
        assert param.requires_grad == (STAGES[stage].freezing[component] is True), (stage, name)
    expected = {"vision_tower", "language_model", "lm_head"} | {
        "vitsplit": set(CONNECTOR_PARTS),
        "vitsplit_llm": {"task_head", "prior_head", "fusion"},
        "mlp": {"mlp"},
    }[connector]
    assert seen == expected == set(model_components(model))


@pytest.mark.parametrize("connector", ["vitsplit", "mlp"])
def test_lora_trains_lora_in_the_llm_and_the_whole_connector(parts, tmp_path, connector):
    model, _, _ = build(parts, tmp_path, connector, "finetune_lora")
    assert STAGES["finetune_lora"].freezing["language_model"] == LORA
    assert model.peft_config["default"].modules_to_save == ["multi_modal_projector"]
    assert model.peft_config["default"].target_modules.startswith(r".*\.language_model\..*\.(")
    lora = copy = 0
    for name, param in model.named_parameters():
        if "lora_" in name:
            lora += 1
            assert param.requires_grad and ".language_model." in name, name
        elif ".multi_modal_projector.modules_to_save." in name:
            copy += 1
            assert param.requires_grad, name
        else:  # the tower, the LLM's base weights, the LM head, the connector's frozen original
            assert not param.requires_grad, name
    assert lora and copy


def expected_lr(name: str) -> float:
    """The lr groups as they were chosen by name before (connector 1e-3, task head x0.1, offsets x0.5)."""
    if "multi_modal_projector." not in name:
        return 2e-5
    if ".task_head." in name:
        return 1e-4
    return 5e-4 if ".spatial.offset." in name else 1e-3


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("stage", list(STAGE_FLAGS))
def test_lr_groups_by_module_match_the_named_groups(parts, tmp_path, connector, stage):
    model, processor, training_args = build(parts, tmp_path, connector, stage, *LRS)
    trainer = LlavaViTSplitTrainer(model=model, args=training_args, processing_class=processor)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    decay = set(trainer.get_decay_parameter_names(model))
    got = {
        names[id(p)]: (group["lr"], group["weight_decay"])
        for group in optimizer.param_groups
        for p in group["params"]
    }
    expected = {
        n: (pytest.approx(expected_lr(n)), 0.1 if n in decay else 0.0)
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    assert got == expected
    lrs = {round(lr, 12) for lr, _ in got.values()}
    assert 1e-3 in lrs and (stage == "pretrain") == (2e-5 not in lrs)  # the LLM trains in stage 2 only
    if connector == "vitsplit":  # deformable convs: all four kinds appear
        assert {1e-4, 5e-4, 1e-3} <= lrs

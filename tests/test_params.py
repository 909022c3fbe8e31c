"""Parameter accounting of the presets (built on the meta device) and the ``params`` command."""

from __future__ import annotations

import json

import pytest

from llava_vitsplit.cli import main as cli_main
from llava_vitsplit.params import vlm_param_report
from llava_vitsplit.presets import get_preset, vlm_presets


def test_released_connector_has_exactly_the_published_parameter_count():
    report = vlm_param_report("llava-v1.5-7b-released")
    assert report["connector"] == {"task_head": 12_596_224, "prior_head": 10_487_808, "fusion": 159_391_744}
    assert report["components"]["connector"] == 182_475_776
    assert report["stages"]["pretrain"]["trainable"] == 182_475_776
    # tower as run: CLIP-L/336 without its last block (23 of 24 blocks)
    assert report["components"]["vision_tower"] == 290_911_232
    assert report["stages"]["finetune"]["frozen"] == 290_911_232


def test_paper_preset_adds_the_deformable_offset_predictors():
    released = vlm_param_report("llava-v1.5-7b-released")["connector"]
    paper = vlm_param_report("llava-v1.5-7b")["connector"]
    # deformable 3x3: no bias (-C_out) plus an offset conv C_in -> 18 with bias
    assert paper["prior_head"] - released["prior_head"] == -1024 + (1024 * 18 * 9 + 18)
    assert paper["fusion"] - released["fusion"] == -4096 + (4096 * 18 * 9 + 18)


def test_mlp_baseline_is_llavas_21m_projector():
    report = vlm_param_report("llava-v1.5-7b-mlp")
    assert report["connector"] == {"mlp": 1024 * 4096 + 4096 + 4096 * 4096 + 4096}


def test_13b_fusion_targets_the_13b_width():
    report = vlm_param_report("llava-v1.5-13b")
    assert report["connector"]["fusion"] == 2048 * 5120 + 5120 + 9 * 5120 * 5120 + (5120 * 18 * 9 + 18)


def test_every_preset_builds_and_counts(capsys):
    for name in vlm_presets():
        assert cli_main(["params", "--preset", name, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["stages"]["pretrain"]["trainable"] == report["components"]["connector"] > 0


def test_params_command_prints_a_table(capsys):
    assert cli_main(["params", "--preset", "llava-v1.5-7b-released"]) == 0
    out = capsys.readouterr().out
    assert "182,475,776" in out and "stage 1 (pretrain)" in out and "task_head" in out


def test_unknown_preset_lists_the_valid_ones(capsys):
    assert cli_main(["params", "--preset", "llava-v9"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'llava-v9'" in err and "llava-v1.5-7b-released" in err
    with pytest.raises(KeyError, match="valid presets"):
        get_preset("llava-v9")


def test_readme_preset_table_matches_the_counts():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in vlm_presets():
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` |"))
        stage1, stage2 = (int(cell.strip(" *").replace(",", "")) for cell in row.split("|")[3:5])
        stages = vlm_param_report(name)["stages"]
        assert (stage1, stage2) == (stages["pretrain"]["trainable"], stages["finetune"]["trainable"]), name


@pytest.mark.parametrize("connector_type", ["vitsplit", "mlp2x_gelu"])
def test_checkpoint_report_counts_what_each_stage_trains(tmp_path, connector_type):
    from llava_vitsplit.params import checkpoint_param_report
    from llava_vitsplit.stages import apply_stage
    from llava_vitsplit.testing.tiny import build_tiny_checkpoint

    path, model, _ = build_tiny_checkpoint(tmp_path / "ckpt", connector_type=connector_type)
    report = checkpoint_param_report(path)
    for stage in ("pretrain", "finetune"):
        apply_stage(model, stage)
        trainable = {id(p): p.numel() for p in model.parameters() if p.requires_grad}
        assert report["stages"][stage]["trainable"] == sum(trainable.values()) > 0, stage
    assert sum(report["stages"]["pretrain"].values()) == sum(p.numel() for p in model.parameters())


# Published parameter counts of the released LLMs (their config.json shapes; embeddings and LM head
# untied except Gemma-3's) and how many parameters the builder's one added ``<image>`` row adds.
PUBLISHED_LLM = {
    "llama3.1-8b": (8_030_261_248, 2 * 4096),
    "qwen2.5-7b": (7_615_616_512, 2 * 3584),
    "qwen3-8b": (8_190_735_360, 2 * 4096),
    "gemma3-1b": (999_885_952, 1152),  # tied: the row is shared by the embeddings and the LM head
}


@pytest.mark.parametrize("llm", sorted(PUBLISHED_LLM))
@pytest.mark.parametrize("tower", ["clip", "siglip"])
def test_modern_llm_presets_count_the_published_llm_and_the_readme_says_so(llm, tower):
    from pathlib import Path

    published, image_row = PUBLISHED_LLM[llm]
    name = f"{llm}-{tower}"
    report = vlm_param_report(name)
    assert report["components"]["language_model"] == published + image_row
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` |"))
    assert row.split("|")[5].strip() == f"{published + image_row:,} ({published:,})"
    if tower == "siglip":  # 27 blocks, no CLS, 729 tokens; the task head copies the last kept block
        config = get_preset(name).model_config()
        assert config.vision_config.num_hidden_layers == 27 and (384 // 14) ** 2 == 729
        assert get_preset(name).adapter["prior_layers"] == [25]

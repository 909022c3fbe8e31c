"""The connector registry: a connector type registered in one place trains both stages and answers.

The test's connector pools the feature layer's patch grid 2x2 before a two-layer GELU MLP, so it emits a
quarter of the patches as image tokens (the tiny tower's 4x4 grid -> 4 tokens): the builder's image-token
layout, the processor (training data, serving and vLLM count tokens through it), the freezing table, the
parameter report and the stage-1 save all follow the one ``register_connector`` call. The built-in
connectors' token counts agree between the spec, the model's output and the saved processor, whose
feature strategy is the config's.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from _script_runs import SHIPPED_DATA
from PIL import Image
from torch import nn

from llava_vitsplit.backbones.hf_layers import num_prefix_tokens
from llava_vitsplit.data.dataset import count_image_tokens
from llava_vitsplit.model.connector_registry import (
    MLP,
    ConnectorSpec,
    connector_spec,
    register_connector,
    unregister_connector,
)
from llava_vitsplit.model.modeling import LlavaViTSplitConfig
from llava_vitsplit.params import model_param_report
from llava_vitsplit.testing.tiny import TINY_IMAGE_SIZE, TINY_PATCH, build_tiny_checkpoint
from llava_vitsplit.testing.tiny_parts import save_tiny_parts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class PooledMLPConnector(nn.Module):
    """2x2 average pooling of the feature layer's patch grid, then LLaVA's two-layer GELU MLP."""

    def __init__(self, config, tower_blocks, num_layers) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens(config.vision_config)
        width, llm_width = config.vision_config.hidden_size, config.text_config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(width, llm_width), nn.GELU(), nn.Linear(llm_width, llm_width))

    def forward_hidden_states(self, hidden_states, grid_hw):
        patches = hidden_states[-1][:, self.num_prefix_tokens :]  # [B, h*w, C]
        grid = patches.transpose(1, 2).unflatten(2, grid_hw)  # [B, C, h, w]
        pooled = F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2).contiguous()  # [B, h/2 * w/2, C]
        return self.mlp(pooled)  # [B, h/2 * w/2, D_llm]


POOLED = ConnectorSpec(
    name="pool2x2_mlp",
    module_class=PooledMLPConnector,
    parts=lambda connector: {MLP: [connector.mlp]},
    description="2x2 average pooling + MLP (test)",
    token_stride=2,
)
GRID = TINY_IMAGE_SIZE // TINY_PATCH  # 4 patches a side


@pytest.fixture
def pooled_connector():
    register_connector(POOLED)  # the one place
    yield POOLED
    unregister_connector(POOLED.name)


def train_argv(parts, out, *extra):
    return [
        "--model_name_or_path", str(parts["llm"]), "--vision_tower", str(parts["vision"]),
        "--mm_projector_type", POOLED.name, "--image_folder", str(SHIPPED_DATA), "--output_dir", str(out),
        "--report_to", "none", "--per_device_train_batch_size", "4", "--dataloader_num_workers", "0",
        "--use_cpu", "True", "--max_steps", "2", "--save_strategy", "no", *extra,
    ]  # fmt: skip


@pytest.mark.e2e
def test_a_connector_registered_in_one_place_trains_both_stages_and_answers(pooled_connector, tmp_path):
    from llava_vitsplit.serve.generation import (
        GenerationSettings,
        generate_batch,
        render_prompt,
        user_messages,
    )
    from llava_vitsplit.serve.loading import load_model
    from llava_vitsplit.train.run import train

    parts = save_tiny_parts(tmp_path / "parts", SHIPPED_DATA)
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    trainer = train(train_argv(parts, stage1, "--data_path", str(SHIPPED_DATA / "pretrain.json"),
                               "--tune_mm_mlp_adapter", "True"))  # fmt: skip
    model = trainer.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        f"model.multi_modal_projector.mlp.{i}.{k}" for i in (0, 2) for k in ("weight", "bias")
    }
    report = model_param_report(model)
    assert report["connector"] == {"mlp": sum(p.numel() for p in model.connector.parameters())}
    assert report["stages"]["pretrain"]["trainable"] == report["connector"]["mlp"]
    saved = json.loads((stage1 / "connector_config.json").read_text())
    assert saved["connector_type"] == POOLED.name and "adapter" not in saved

    train(train_argv(parts, stage2, "--data_path", str(SHIPPED_DATA / "finetune.json"),
                     "--pretrain_mm_mlp_adapter", str(stage1)))  # fmt: skip
    loaded = load_model(str(stage2), device="cpu", dtype="float32")
    assert isinstance(loaded.model.connector, PooledMLPConnector)
    tokens = (GRID // 2) ** 2
    assert count_image_tokens(loaded.processor) == tokens  # what the training data expands <image> to
    sizes = loaded.processor._get_num_multimodal_tokens(image_sizes=[(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)])
    assert sizes["num_image_tokens"] == [tokens]  # what vLLM's processing asks the processor
    image = Image.open(next((SHIPPED_DATA / "images").iterdir()))
    prompt = render_prompt(loaded.processor, user_messages("What is this?", 1, loaded.processor.image_token))
    (reply,) = generate_batch(loaded, [prompt], [image], GenerationSettings(max_new_tokens=4))
    assert isinstance(reply, str)
    features = loaded.model.model.get_image_features(torch.zeros(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    assert features.pooler_output[0].shape[0] == tokens


@pytest.mark.parametrize("connector_type", ["vitsplit", "mlp2x_gelu"])
@pytest.mark.parametrize("strategy", ["default", "full"])
def test_spec_model_and_processor_count_the_same_tokens(tmp_path, connector_type, strategy):
    path, model, processor = build_tiny_checkpoint(tmp_path, connector_type=connector_type)
    if strategy == "full":  # rebuild the processor for the config's other strategy
        from llava_vitsplit.model.builder import make_processor

        model.config.vision_feature_select_strategy = strategy
        model = type(model)(model.config).eval()
        processor = make_processor(model.config, processor.image_processor, processor.tokenizer)
    expected = connector_spec(connector_type).num_image_tokens(model.config, (GRID, GRID))
    assert processor.vision_feature_select_strategy == model.config.vision_feature_select_strategy
    with torch.no_grad():
        features = model.model.get_image_features(torch.zeros(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    assert features.pooler_output[0].shape[0] == expected == count_image_tokens(processor)


def test_unknown_connector_type_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown connector_type 'pooled'; valid: vitsplit, mlp2x_gelu"):
        LlavaViTSplitConfig(connector_type="pooled")

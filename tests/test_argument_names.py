"""One name per concept on the command line: the connector's arguments are named for it, LLaVA-1.5's flag
names stay accepted as aliases with the same effect, and files written under the old names still load."""

from __future__ import annotations

import json

from llava_vitsplit.train.arguments import LLAVA_ALIASES, parse_args
from llava_vitsplit.train.model_setup import RECIPE_FILE, BuildRecipe
from llava_vitsplit.train.run_config import argument_sources

NEW = ["--connector_type", "mlp2x_gelu", "--stage1_connector", "s1", "--connector_lr", "1e-3",
       "--freeze_connector", "True"]  # fmt: skip
LLAVA = ["--mm_projector_type", "mlp2x_gelu", "--pretrain_mm_mlp_adapter", "s1", "--mm_projector_lr", "1e-3",
         "--freeze_mm_mlp_adapter", "True"]  # fmt: skip


def parsed(*argv: str) -> dict:
    model_args, _, training_args = parse_args(["--data_path", "d.json", "--report_to", "none", *argv])
    return {name: getattr(model_args, name, getattr(training_args, name, None)) for name in LLAVA_ALIASES}


def test_llava_flag_names_are_aliases_of_the_connector_arguments():
    assert (
        parsed(*NEW)
        == parsed(*LLAVA)
        == {
            "connector_type": "mlp2x_gelu",
            "stage1_connector": "s1",
            "connector_lr": 1e-3,
            "freeze_connector": True,
        }
    )
    sources = argument_sources(LLAVA, environ={})
    assert {sources[name] for name in LLAVA_ALIASES} == {"command line"}


def test_a_lora_recipe_written_under_the_old_field_name_loads(tmp_path):
    recipe = BuildRecipe("v", "l", "vitsplit", {}, "llm", -2, "default", "pad", stage1_connector="s1")
    recipe.save(tmp_path)
    data = json.loads((tmp_path / RECIPE_FILE).read_text())
    data["pretrain_mm_mlp_adapter"] = data.pop("stage1_connector")
    (tmp_path / RECIPE_FILE).write_text(json.dumps(data))
    assert BuildRecipe.load(tmp_path) == recipe

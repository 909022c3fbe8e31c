"""``llava-vitsplit merge-lora LORA_DIR OUT_DIR``: fold a LoRA run into a plain checkpoint.

A ``--stage finetune_lora`` (``--lora_enable``) run saves the LoRA adapter (peft: LoRA on the LLM, the
whole connector as ``modules_to_save``), the processor and ``llava_vitsplit_recipe.json`` (how its base model was built).
Merging rebuilds that base deterministically, applies the LoRA adapter, merges the LoRA deltas into the linear
weights and saves a checkpoint that ``AutoModelForImageTextToText.from_pretrained`` loads without peft.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def merge_lora(lora_dir: str | Path, output_dir: str | Path, dtype: torch.dtype = torch.float32):
    """Returns the merged model (also saved, with the processor, to ``output_dir``)."""
    from peft import PeftModel
    from transformers import AutoProcessor

    import llava_vitsplit  # noqa: F401  (registers the llava_vitsplit classes)
    from llava_vitsplit.train.model_setup import BuildRecipe, build_from_recipe

    recipe = BuildRecipe.load(lora_dir)
    base, _ = build_from_recipe(recipe, dtype)
    merged = PeftModel.from_pretrained(base, str(lora_dir)).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(output_dir)
    AutoProcessor.from_pretrained(str(lora_dir)).save_pretrained(output_dir)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llava-vitsplit merge-lora", description=__doc__.split("\n")[0])
    parser.add_argument("lora_dir", help="output folder of a --lora_enable training run")
    parser.add_argument("output_dir", help="where to write the merged checkpoint")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    args = parser.parse_args(argv)
    merge_lora(args.lora_dir, args.output_dir, DTYPES[args.dtype])
    print(f"merged checkpoint written to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

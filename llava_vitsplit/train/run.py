"""``llava-vitsplit train`` / ``python -m llava_vitsplit.train``: one LLaVA training stage on the Trainer.

Stage 1 (``--tune_mm_mlp_adapter True --version plain``) writes ``connector.safetensors`` +
``connector_config.json``; stage 2 (``--pretrain_mm_mlp_adapter STAGE1_DIR``) writes a full checkpoint
(model + processor) that loads with ``AutoModelForImageTextToText.from_pretrained``; stage 2 with
``--lora_enable True`` writes the LoRA adapter (plus the connector) for ``llava-vitsplit merge-lora``.
``--resume_from_checkpoint DIR|latest`` continues a killed run where its last checkpoint left off.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from contextlib import contextmanager

from llava_vitsplit.data.collator import SupervisedCollator
from llava_vitsplit.data.dataset import LazySupervisedDataset, describe_problems
from llava_vitsplit.train.arguments import parse_args
from llava_vitsplit.train.connector_io import save_connector
from llava_vitsplit.train.model_setup import setup_model, stage_of
from llava_vitsplit.train.provenance import part_provenance
from llava_vitsplit.train.trainer import STAGING_DIR, LlavaViTSplitTrainer

logger = logging.getLogger("llava_vitsplit.train")


@contextmanager
def full_weights_while_building(training_args):
    """Build with whole tensors even under ZeRO-3 (no ``zero.Init``): the builder copies tower blocks into
    the task head and loads the stage-1 connector, which partitioned size-0 tensors would break.
    DeepSpeed partitions the model when the Trainer initialises its engine."""
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    hf_ds_config = getattr(training_args, "hf_deepspeed_config", None)
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if hf_ds_config is not None:
            set_hf_deepspeed_config(hf_ds_config)


def _resume_target(value):
    if value is None or str(value).lower() in ("", "false", "none"):
        return None
    if str(value).lower() in ("true", "latest"):
        return True
    return value


def train(argv: list[str] | None = None) -> LlavaViTSplitTrainer:
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    training_args.remove_unused_columns = False  # items carry pixel_values the model takes by name
    stage = stage_of(model_args)
    if training_args.should_save:
        shutil.rmtree(os.path.join(training_args.output_dir, STAGING_DIR), ignore_errors=True)

    with full_weights_while_building(training_args):
        model, processor, recipe, version = setup_model(model_args, data_args, training_args)
        # Hashed now: under ZeRO-3 the tower is partitioned once training starts.
        provenance = (
            part_provenance(model, recipe.vision_tower, recipe.language_model)
            if stage == "pretrain"
            else None
        )
    dataset = LazySupervisedDataset(
        data_args.data_paths,
        processor,
        image_folder=data_args.image_folder,
        template=version,
        model_max_length=training_args.model_max_length,
        strict=data_args.strict_data,
        require_image=stage == "pretrain",
    )
    trainer = LlavaViTSplitTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=SupervisedCollator(pad_token_id=processor.tokenizer.pad_token_id),
        processing_class=processor,
    )
    trainer.train(resume_from_checkpoint=_resume_target(training_args.resume_from_checkpoint))
    trainer.save_state()
    if dataset.problems:
        logger.warning("skipped samples (this process): %s", describe_problems(dataset.problems))

    out = training_args.output_dir
    unwrapped = trainer.model
    if stage == "pretrain":
        save_connector(unwrapped, out, trainer.is_world_process_zero(), provenance)
    else:
        base = unwrapped.get_base_model() if training_args.lora_enable else unwrapped
        base.config.use_cache = True
        trainer.save_model(out)
        if trainer.is_world_process_zero():
            processor.save_pretrained(out)
            if training_args.lora_enable:
                recipe.save(out)
    return trainer


def main(argv: list[str] | None = None) -> int:
    train(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

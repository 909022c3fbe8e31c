"""``llava-vitsplit train`` / ``python -m llava_vitsplit.train``: one LLaVA training stage on the Trainer.

The stage (``--stage``, or LLaVA's flags; ``llava_vitsplit/stages.py``) decides what trains and what is
saved. Stage 1 (``--stage pretrain`` = ``--tune_mm_mlp_adapter True``, template ``plain``) writes ``connector.safetensors`` +
``connector_config.json``; stage 2 (``--stage1_connector STAGE1_DIR``, LLaVA's
``--pretrain_mm_mlp_adapter``) writes a full checkpoint (model + processor) that loads with ``AutoModelForImageTextToText.from_pretrained``; stage 2 with
``--lora_enable True`` writes the LoRA adapter (plus the connector) for ``llava-vitsplit merge-lora``.
``--resume_from_checkpoint DIR|latest`` continues a killed run where its last checkpoint left off.

Before the model is built, ``OUTPUT_DIR`` is created and proven writable, and the data files and image
folders (of ``DATA_PATH``, or of each source of a mixture file) must exist; once it is built, the disk
must hold one checkpoint. ``OUTPUT_DIR/data_mixture.json`` records how many samples each data source
gave (a resumed run must draw the same). The final model is written under
``OUTPUT_DIR/.staging/final`` and moved in file by file, its config last.

Exit codes: 0 done; 1 failed (on one rank: every rank stops within seconds and logs that rank's error,
``util.rank_failure``); 75 (``EXIT_PREEMPTED``) stopped on SIGTERM/SIGUSR1 after writing a checkpoint,
requeue with ``--resume_from_checkpoint latest``; 3 (``EXIT_NONFINITE``) stopped after
``--max_nonfinite_steps`` non-finite steps in a row (``train.step_guard``), no final model written.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint

from llava_vitsplit.data.collator import SupervisedCollator
from llava_vitsplit.data.dataset import LazySupervisedDataset, describe_problems
from llava_vitsplit.data.mixture import record_draw, resolve_sources
from llava_vitsplit.data.packing import PackingCollator, packing_layout
from llava_vitsplit.data.templates import PlainTemplate
from llava_vitsplit.stages import SAVES_CONNECTOR, TrainStage
from llava_vitsplit.train.arguments import parse_args
from llava_vitsplit.train.connector_io import save_connector
from llava_vitsplit.train.faults import FaultyCollator
from llava_vitsplit.train.model_setup import setup_model, stage_of
from llava_vitsplit.train.provenance import part_provenance
from llava_vitsplit.train.run_config import format_settings, start_run
from llava_vitsplit.train.step_guard import EXIT_NONFINITE, EXIT_PREEMPTED, WithSampleIds
from llava_vitsplit.train.storage import (
    check_free_space,
    checkpoint_bytes,
    prepare_output_dir,
    reporting_full_disk,
)
from llava_vitsplit.train.trainer import STAGING_DIR, LlavaViTSplitTrainer
from llava_vitsplit.util.atomic import write_atomic
from llava_vitsplit.util.rank_failure import stopping_every_rank_on_failure

logger = logging.getLogger("llava_vitsplit.train")
FINAL_STAGING = "final"  # the final model is written under <output_dir>/.staging/final first
RANK0_PID = "rank0.pid"  # rank 0's process id while it trains (removed when it ends)
LOADABLE_MARKERS = ("config.json", "adapter_config.json")  # written last: their presence means complete


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


@contextmanager
def rank0_pid_file(out: Path, is_rank0: bool):
    """``OUTPUT_DIR/rank0.pid`` while rank 0 trains: a job script's signal trap sends SIGUSR1 there (one
    rank receiving it is enough, ``train.step_guard``)."""
    if is_rank0:
        write_atomic(out / RANK0_PID, lambda p: p.write_text(f"{os.getpid()}\n"))
    try:
        yield
    finally:
        if is_rank0:
            (out / RANK0_PID).unlink(missing_ok=True)


def resume_target(value, out: Path):
    """What ``--resume_from_checkpoint`` resumes: a path, or for ``latest``/``true`` the newest checkpoint of
    ``out``, or nothing when it has none yet (the first run of a job that is requeued with the same line)."""
    if value is None or str(value).lower() in ("", "false", "none"):
        return None
    if str(value).lower() in ("true", "latest"):
        last = get_last_checkpoint(str(out))
        if last is None:
            logger.warning(
                "--resume_from_checkpoint %s: no checkpoint in %s yet, starting at step 0", value, out
            )
        return last
    return value


def build_dataset(sources, processor, conv_template: str, stage: TrainStage, data_args, training_args):
    """The training set of ``sources`` (a data file list or a mixture's), rendered with ``conv_template``."""
    return LazySupervisedDataset(
        sources,
        processor,
        image_folder=data_args.image_folder,
        template=conv_template,
        model_max_length=training_args.model_max_length,
        strict=data_args.strict_data,
        require_image=stage.needs_images,
        seed=training_args.seed if training_args.data_seed is None else training_args.data_seed,
        max_images_per_sample=data_args.max_images_per_sample,
    )


def make_collator(pad_token_id: int, model_args, training_args):
    """The batch collator: padded rows, or with ``--packing`` packed rows (``data.packing``)."""
    if not training_args.packing:
        return SupervisedCollator(pad_token_id=pad_token_id)
    layout = packing_layout(model_args.attn_implementation)
    return PackingCollator(pad_token_id, training_args.model_max_length, layout)


def train(argv: list[str] | None = None) -> LlavaViTSplitTrainer | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, training_args = parse_args(argv)
    if training_args.print_config:  # every resolved setting and its source; nothing is built
        print(format_settings(start_run(argv, (model_args, data_args, training_args), None)))
        return None
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    training_args.remove_unused_columns = False  # items carry pixel_values the model takes by name
    stage = stage_of(model_args)
    out = prepare_output_dir(training_args.output_dir)  # before anything is built or trained
    # Data files, image folders and a mixture's sources are checked before the model is built; a stage
    # that renders with the plain template (captions) ignores the sources' templates.
    templates = stage.template != PlainTemplate.name
    sources = resolve_sources(data_args.data_paths, data_args.image_folder, templates=templates)
    if training_args.should_save:
        shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
        start_run(argv, (model_args, data_args, training_args), out)  # run_config.json: settings, sources

    with full_weights_while_building(training_args):
        model, processor, recipe, conv_template = setup_model(model_args, data_args, training_args)
        check_free_space(out, checkpoint_bytes(model))
        # Hashed now: under ZeRO-3 the tower is partitioned once training starts.
        provenance = (
            part_provenance(model, recipe.vision_tower, recipe.language_model)
            if stage.records_provenance
            else None
        )
    dataset = build_dataset(sources, processor, conv_template, stage, data_args, training_args)
    resume = resume_target(training_args.resume_from_checkpoint, out)
    record_draw(out, dataset.mixture, resume is not None, write=training_args.should_save)
    collator = WithSampleIds(make_collator(processor.tokenizer.pad_token_id, model_args, training_args))
    trainer = LlavaViTSplitTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
    )
    if trainer.fault is not None:
        trainer.data_collator = FaultyCollator(collator, trainer.fault)
    with rank0_pid_file(out, trainer.is_world_process_zero()):
        trainer.train(resume_from_checkpoint=resume)
    trainer.save_state()
    if dataset.problems:
        logger.warning("skipped samples (this process): %s", describe_problems(dataset.problems))
    if trainer.step_guard.outcome is not None:  # preempted (checkpoint written) or stopped non-finite
        return trainer

    if stage.saves == SAVES_CONNECTOR:
        with reporting_full_disk(out, "the stage-1 connector"):
            save_connector(trainer.model, out, trainer.is_world_process_zero(), provenance)
    else:
        save_final_model(trainer, processor, recipe, out)
    return trainer


def save_final_model(trainer: LlavaViTSplitTrainer, processor, recipe, out: Path) -> None:
    """Write the model (or LoRA adapter) + processor under ``.staging/final``, then move it into ``out``.

    The files are moved one by one, the config that marks a loadable folder last, so ``out`` never holds
    a config next to partial weights.
    """
    lora = trainer.args.lora_enable
    base = trainer.model.get_base_model() if lora else trainer.model
    base.config.use_cache = True
    staging = out / STAGING_DIR / FINAL_STAGING
    if trainer.args.should_save:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    with reporting_full_disk(out, "the final model"):
        trainer.save_model(str(staging))
        if trainer.is_world_process_zero():
            processor.save_pretrained(staging)
            if lora:
                recipe.save(staging)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        publish_folder(staging, out)


def publish_folder(staging: Path, out: Path) -> None:
    """Move the files of ``staging`` into ``out`` (each ``os.replace`` is atomic), the markers last."""
    files = sorted(p for p in staging.iterdir() if p.is_file())
    for path in sorted(files, key=lambda p: p.name in LOADABLE_MARKERS):
        os.replace(path, out / path.name)
    shutil.rmtree(staging)
    if not any((out / STAGING_DIR).iterdir()):
        (out / STAGING_DIR).rmdir()


def main(argv: list[str] | None = None) -> int:
    """Train; an exception stops every rank (exit 1); see the module docstring for the other codes."""
    trainer = stopping_every_rank_on_failure(lambda: train(argv))
    if trainer is None:  # --print_config
        return 0
    return {"preempted": EXIT_PREEMPTED, "nonfinite": EXIT_NONFINITE}.get(trainer.step_guard.outcome, 0)


if __name__ == "__main__":
    sys.exit(main())

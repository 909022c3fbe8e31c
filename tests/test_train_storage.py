"""A run's output folder: checked before step 1, full-disk saves named and harmless, final model atomic."""

from __future__ import annotations

import errno
import os

import pytest
from _script_runs import SHIPPED_DATA, train_argv
from safetensors.torch import load_file

from llava_vitsplit.data.collator import SupervisedCollator
from llava_vitsplit.data.dataset import LazySupervisedDataset
from llava_vitsplit.testing.tiny_parts import save_tiny_parts
from llava_vitsplit.train.arguments import parse_args
from llava_vitsplit.train.model_setup import setup_model
from llava_vitsplit.train.run import save_final_model, train
from llava_vitsplit.train.storage import NoSpaceLeft, check_free_space, prepare_output_dir
from llava_vitsplit.train.trainer import STAGING_DIR, LlavaViTSplitTrainer

FULL_DISK_ERRORS = {
    "enospc": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "torch_zip": lambda: RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return save_tiny_parts(tmp_path_factory.mktemp("storage_parts"), SHIPPED_DATA)


def run_argv(parts, out, *extra):
    return train_argv(parts, out, *extra)


class FullDiskTrainer(LlavaViTSplitTrainer):
    """Writes part of the weights, then fails like a full disk, once ``fail_at`` steps are reached."""

    fail_at = 4
    error = staticmethod(FULL_DISK_ERRORS["enospc"])

    def _save(self, output_dir=None, state_dict=None):
        if self.state.global_step >= self.fail_at:
            os.makedirs(output_dir, exist_ok=True)
            with open(os.path.join(output_dir, "model.safetensors"), "wb") as partial:
                partial.write(b"\0" * 64)
            raise self.error()
        super()._save(output_dir, state_dict)


def trainer_for(parts, out, cls, *extra):
    model_args, data_args, training_args = parse_args(run_argv(parts, out, *extra))
    training_args.remove_unused_columns = False
    model, processor, recipe, version = setup_model(model_args, data_args, training_args)
    dataset = LazySupervisedDataset(
        data_args.data_paths, processor, image_folder=data_args.image_folder, template=version
    )
    collator = SupervisedCollator(pad_token_id=processor.tokenizer.pad_token_id)
    trainer = cls(model=model, args=training_args, train_dataset=dataset, data_collator=collator)
    return trainer, processor, recipe


def test_an_output_dir_that_cannot_be_created_fails_before_the_model_is_built(parts, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OSError, match="OUTPUT_DIR .*a_file/run is not writable"):
        train(run_argv(parts, tmp_path / "a_file" / "run", "--max_steps", "1"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_dir_is_refused(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    with pytest.raises(OSError, match="is not writable"):
        prepare_output_dir(out)


def test_free_space_must_hold_one_checkpoint(tmp_path):
    check_free_space(tmp_path, 1)
    with pytest.raises(NoSpaceLeft, match=f"no space left on {tmp_path}: .* GiB free, one checkpoint needs"):
        check_free_space(tmp_path, 2**60)


def test_a_missing_image_folder_is_one_error_before_training(parts, tmp_path):
    argv = run_argv(parts, tmp_path / "run", "--max_steps", "1", "--image_folder", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="IMAGE_FOLDER .*nowhere does not exist"):
        train(argv)


@pytest.mark.parametrize("kind", sorted(FULL_DISK_ERRORS))
def test_a_full_disk_keeps_the_last_good_checkpoint(parts, tmp_path, kind):
    out = tmp_path / "run"

    class Trainer(FullDiskTrainer):
        error = staticmethod(FULL_DISK_ERRORS[kind])

    trainer, _, _ = trainer_for(parts, out, Trainer, "--max_steps", "4", "--save_steps", "2")
    with pytest.raises(NoSpaceLeft) as info:
        trainer.train()
    message = str(info.value)
    assert f"no space left on {out}" in message and "checkpoint-4 was not saved" in message
    assert f"the last good checkpoint {out / 'checkpoint-2'} is kept" in message
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert load_file(str(out / "checkpoint-2" / "model.safetensors"))  # complete, loadable weights
    assert not (out / "checkpoint-4").exists() and not (out / STAGING_DIR / "checkpoint-4").exists()


def test_the_final_model_appears_only_when_complete(parts, tmp_path):
    out = tmp_path / "run"
    trainer, processor, recipe = trainer_for(parts, out, FullDiskTrainer, "--max_steps", "1")
    trainer.fail_at = 10**9
    trainer.train()
    trainer.fail_at = 1
    with pytest.raises(NoSpaceLeft, match=f"no space left on {out}: writing the final model failed"):
        save_final_model(trainer, processor, recipe, out)
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()

    trainer.fail_at = 10**9  # space freed: the same call publishes the whole folder
    save_final_model(trainer, processor, recipe, out)
    assert (out / "config.json").is_file() and load_file(str(out / "model.safetensors"))
    assert (out / "preprocessor_config.json").is_file() or (out / "processor_config.json").is_file()
    assert not (out / STAGING_DIR).exists()

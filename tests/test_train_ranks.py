"""Mixed text/image data under plain PyTorch, ZeRO-2, ZeRO-3 and two CPU ranks, with the real scripts.

The data's optimizer steps alternate between image, text-only and mixed batches (``STEP_MODALITIES``,
read in order with ``--train_sampling_strategy sequential``), with samples of 0, 1 and 3 images: a
3-image sample sits next to a text-only one and next to a one-image one (the collator concatenates a
step's images; on two ranks one rank runs 3 images while the other runs 1 or none). A text-only step must not re-apply the
previous step's connector gradient (ZeRO-3 keeps the gradient of a module that takes no part in a
step), a run resumed right before a text-only step must continue the uninterrupted curve, and two
ranks that get different modalities in the same step must run (ZeRO-3 all-gathers module by module)
and reproduce the one-process run of the same global batch. With ``PACKING=True`` two ZeRO-3 ranks, each
packing its two samples into one row, reproduce one unpacked process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _script_runs import SHIPPED_DATA, parts_and_stage1, run_script, stage2_settings, torchrun_settings

pytestmark = pytest.mark.e2e

# I: a record with one image, M: a record with three images, T: text-only
STEP_MODALITIES = ["II", "TT", "MT", "TT", "IM", "TI"]
SEQUENTIAL = ("--group_by_modality_length", "False", "--train_sampling_strategy", "sequential")


def history(run_dir: Path, key: str) -> dict[int, float]:
    entries = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry[key] for entry in entries if key in entry}


def assert_same_curve(got: Path, expected: Path, epochs: int = 1, steps: int = len(STEP_MODALITIES)) -> None:
    for key in ("loss", "grad_norm"):
        ours, reference = history(got, key), history(expected, key)
        assert sorted(ours) == sorted(reference) == list(range(1, epochs * steps + 1)), key
        for step, value in reference.items():
            assert ours[step] == pytest.approx(value, rel=2e-5, abs=1e-6), (key, step, ours, reference)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny parts, an untrained stage-1 connector for them and the mixed data file."""
    setup = parts_and_stage1(tmp_path_factory.mktemp("ranks"))
    root = setup["root"]
    records = json.loads((SHIPPED_DATA / "finetune.json").read_text())
    with_image = [r for r in records if "image" in r]
    pools = {
        "I": iter(with_image),
        "T": iter([r for r in records if "image" not in r]),
        "M": iter(three_image_records(with_image)),
    }
    mixed = [next(pools[kind]) for step in STEP_MODALITIES for kind in step]
    (root / "mixed.json").write_text(json.dumps(mixed))
    return {**setup, "data": root / "mixed.json"}


def three_image_records(one_image: list[dict]) -> list[dict]:
    """Records with three of the shipped images: tags in two turns, and a list without tags."""
    first, second, third, fourth = (r["image"] for r in one_image[-4:])
    ask = "Which of the three shapes is largest?"
    return [
        {
            "id": "three_tagged",
            "image": [first, second, third],
            "conversations": [
                {"from": "human", "value": "First: <image> second: <image>\nDo they match?"},
                {"from": "gpt", "value": "No, they differ."},
                {"from": "human", "value": "<image>\nAnd this one?"},
                {"from": "gpt", "value": "It differs too."},
            ],
        },
        {
            "id": "three_untagged",
            "image": [fourth, third, first],
            "conversations": [
                {"from": "human", "value": ask},
                {"from": "gpt", "value": "They are the same size."},
            ],
        },
    ]


def finetune(setup, name: str, *args: str, **env) -> Path:
    out = setup["root"] / name
    settings = {"SAVE_STEPS": 3, "SAVE_TOTAL_LIMIT": 2, "PER_DEVICE_BATCH_SIZE": 2, **env}
    run_script(
        "finetune.sh", stage2_settings(setup, out, **settings), *args, log=setup["root"] / f"{name}.txt"
    )
    return out


@pytest.fixture(scope="module")
def zero3(setup):
    return finetune(setup, "zero3", *SEQUENTIAL)


def test_plain_zero2_and_zero3_agree_step_by_step(setup, zero3):
    plain = finetune(setup, "plain", *SEQUENTIAL, DEEPSPEED_CONFIG="")
    zero2 = finetune(setup, "zero2", *SEQUENTIAL, DEEPSPEED_CONFIG="./scripts/zero2.json")
    assert_same_curve(zero2, plain)
    assert_same_curve(zero3, plain)


def test_zero3_resumed_before_a_text_only_step_continues_the_curve(setup, zero3):
    assert STEP_MODALITIES[3] == "TT"  # checkpoint-3 is followed by a text-only step
    resumed = finetune(
        setup, "zero3_resumed", *SEQUENTIAL, "--resume_from_checkpoint", str(zero3 / "checkpoint-3")
    )
    assert_same_curve(resumed, zero3)  # steps 1-3 come from the checkpoint's state, 4-6 were rerun


def two_cpu_ranks(setup, name: str, *args: str, **env) -> Path:
    return finetune(setup, name, *args, **torchrun_settings(2), **{"PER_DEVICE_BATCH_SIZE": 1, **env})


@pytest.fixture(scope="module")
def ranks2(setup):
    return two_cpu_ranks(setup, "ranks2", *SEQUENTIAL)


def test_two_ranks_with_different_modalities_match_one_process(ranks2, zero3):
    assert any(set(step) == {"I", "T"} for step in STEP_MODALITIES)  # rank 0 an image, rank 1 text
    assert {"MT", "IM"} <= set(STEP_MODALITIES)  # 3 images next to none, and next to one
    assert_same_curve(ranks2, zero3)


def test_two_ranks_resumed_before_multi_image_steps_continue_the_curve(setup, ranks2):
    assert STEP_MODALITIES[3:5] == ["TT", "IM"]  # after checkpoint-3: text-only, then 1 and 3 images
    resumed = two_cpu_ranks(
        setup, "ranks2_resumed", *SEQUENTIAL, "--resume_from_checkpoint", str(ranks2 / "checkpoint-3")
    )
    assert_same_curve(resumed, ranks2)


def test_two_ranks_with_modality_grouping_match_one_process(setup):
    # 7 image and 5 text records in steps of 2: the leftover image and text record share the last step
    # of each epoch, so with 2 epochs the mixed step is followed by more steps.
    # The one-process reference is plain PyTorch: it never re-applies a stale connector gradient.
    one = finetune(setup, "grouped1", NUM_EPOCHS=2, DEEPSPEED_CONFIG="")
    assert_same_curve(two_cpu_ranks(setup, "grouped2", NUM_EPOCHS=2), one, epochs=2)


def test_two_ranks_packed_under_zero3_match_one_process_unpacked(setup):
    """``PACKING=True`` on two ZeRO-3 ranks: each rank packs its two samples (3 images next to none, 1 next
    to 3, ...) into one row; the losses and gradient norms are those of one unpacked process."""
    global_batch = {"GLOBAL_BATCH_SIZE": 4, "MODEL_MAX_LENGTH": 2048}
    unpacked = finetune(
        setup, "unpacked4", *SEQUENTIAL, PER_DEVICE_BATCH_SIZE=4, DEEPSPEED_CONFIG="", **global_batch
    )
    packed = two_cpu_ranks(
        setup, "packed2", *SEQUENTIAL, PER_DEVICE_BATCH_SIZE=2, PACKING="True", **global_batch
    )
    assert "--packing True" in (setup["root"] / "packed2.txt").read_text()
    assert_same_curve(packed, unpacked, steps=len(STEP_MODALITIES) // 2)

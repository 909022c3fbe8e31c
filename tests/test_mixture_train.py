"""Three-source mixtures through ``scripts/pretrain.sh`` (captions) and ``scripts/finetune.sh`` (image and
text-only conversations) under ZeRO-3 with two CPU ranks: each stage writes its realised draw, and
stage 2 resumed from a checkpoint logs the same per-step losses as the uninterrupted run. Source b holds
multi-image records in both stages (``with_multi_image_records``), so batches mix samples of 0, 1 and 3
images (2 and 1 in stage 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _script_runs import SHIPPED_DATA, losses, run_script, script_env, torchrun_settings
from test_mixture import mixture, write_three_sources

from llava_vitsplit.data.mixture import MIXTURE_REPORT
from llava_vitsplit.testing.tiny_parts import save_tiny_parts, tiny_adapter_args

pytestmark = pytest.mark.e2e


def two_ranks(parts, **settings) -> dict[str, str]:
    return script_env(
        parts,
        **torchrun_settings(2),
        DEEPSPEED_CONFIG="./scripts/zero3.json",
        GLOBAL_BATCH_SIZE=4,
        PER_DEVICE_BATCH_SIZE=2,
        NUM_EPOCHS=1,
        OMP_NUM_THREADS=1,
        **settings,
    )


def rewrite_jsonl(path: Path, change) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    images = [record["image"] for record in records]
    path.write_text("".join(json.dumps(change(k, r, images)) + "\n" for k, r in enumerate(records)))


def with_multi_image_records(root: Path) -> None:
    """Source b's records get several images: 3 in stage 2 (tags in the text, or none so they go first),
    2 per caption in stage 1."""
    questions = ("Which of the three is red?", "First <image>, then <image> and <image>: which is red?")

    def three(k, record, images):
        return {
            "id": record["id"],
            "image": [images[k], images[(k + 3) % len(images)], images[(k + 7) % len(images)]],
            "conversations": [
                {"from": "human", "value": questions[k % 2]},
                {"from": "gpt", "value": f"The {('first', 'second', 'third')[k % 3]} one."},
            ],
        }

    def two(k, record, images):
        turns = [{"from": "human", "value": "Describe both images."}, record["conversations"][1]]
        return {
            "id": record["id"],
            "image": [images[k], images[(k + 1) % len(images)]],
            "conversations": turns,
        }

    rewrite_jsonl(root / "b.jsonl", three)
    rewrite_jsonl(root / "captions" / "b.jsonl", two)


def drawn(run) -> dict[str, int]:
    return {e["name"]: e["samples"] for e in json.loads((run / MIXTURE_REPORT).read_text())["sources"]}


def captions_mixture(root) -> Path:
    """Stage 1's three sources: the shipped captions split over a JSON, a JSONL (images in its own
    folder) and another JSON file."""
    captions = json.loads((SHIPPED_DATA / "pretrain.json").read_text())
    (root / "captions").mkdir()
    (root / "captions" / "a.json").write_text(json.dumps(captions[:10]))
    (root / "captions" / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in captions[10:18]))
    (root / "captions" / "c.json").write_text(json.dumps(captions[18:]))
    sources = [
        {"name": "a", "file": "a.json", "fraction": 0.5},
        {"name": "b", "file": "b.jsonl", "image_folder": "../b_images", "count": 6},
        {"name": "c", "file": "c.json", "repeat": 1},
    ]
    path = root / "captions" / "mix.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture_train")
    parts = save_tiny_parts(root / "parts", SHIPPED_DATA)
    write_three_sources(root)
    data = mixture(root, s1={"count": 6, "repeat": None}, s2={"count": 5})  # a: 7 of 14, b: 6 of 10, c: 5
    captions = captions_mixture(root)  # a: 5 of 10, b: 6 of 8, c: 6
    with_multi_image_records(root)
    stage1 = root / "stage1"
    env = two_ranks(parts, DATA_PATH=captions, OUTPUT_DIR=stage1, SAVE_STEPS=100, LEARNING_RATE="2e-3")
    run_script("pretrain.sh", env, *tiny_adapter_args(), log=root / "stage1.txt")
    stage2 = {
        "DATA_PATH": data,
        "PRETRAIN_DIR": stage1,
        "LEARNING_RATE": "5e-3",
        "SAVE_STEPS": 2,
        "SAVE_TOTAL_LIMIT": 3,
    }
    full = root / "stage2"
    run_script("finetune.sh", two_ranks(parts, OUTPUT_DIR=full, **stage2), log=root / "stage2.txt")
    resumed = root / "resumed"
    run_script(
        "finetune.sh",
        two_ranks(parts, OUTPUT_DIR=resumed, **stage2),
        "--resume_from_checkpoint",
        str(full / "checkpoint-2"),
        log=root / "resumed.txt",
    )
    return {"stage1": stage1, "stage2": full, "resumed": resumed}


def test_each_stage_trains_on_its_draw_and_writes_it(runs):
    assert drawn(runs["stage1"]) == {"a": 5, "b": 6, "c": 6}
    assert drawn(runs["stage2"]) == {"a": 7, "b": 6, "c": 5}
    assert sorted(losses(runs["stage1"])) == [1, 2, 3, 4, 5]  # 17 samples, global batch 4
    assert sorted(losses(runs["stage2"])) == [1, 2, 3, 4, 5]  # 18 samples
    assert (runs["stage2"] / "config.json").is_file()


def test_a_resumed_mixture_run_logs_the_same_losses(runs):
    expected, got = losses(runs["stage2"]), losses(runs["resumed"])
    assert sorted(got) == sorted(expected)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=2e-5, abs=1e-6), (step, got, expected)
    assert drawn(runs["resumed"]) == drawn(runs["stage2"])

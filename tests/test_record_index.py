"""The on-disk record index: the indexed dataset equals the eager record list it replaced (samples, order,
places, modality lengths, skip accounting), on the shipped data, bad-record files and a generated 100K set;
when the index is reused or rebuilt; where it lives; one builder per node, and no hang when it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from _script_runs import SHIPPED_DATA
from test_data import image_dir, processor, write_mixed_set  # noqa: F401 (fixtures)

from llava_vitsplit.data import LazySupervisedDataset
from llava_vitsplit.data import record_index as ri
from llava_vitsplit.data.record_index import INDEX_DIR_ENV, index_location, open_index
from llava_vitsplit.testing.llava_mix import EagerRecords, eager_records, write_llava_mix


def assert_same_as_eager(ds: LazySupervisedDataset, eager: EagerRecords, every: int = 1) -> None:
    assert len(ds) == len(eager.samples)
    assert [ds.place(i) for i in range(len(ds))] == eager.places
    assert ds.modality_lengths == eager.modality_lengths(ds.num_image_tokens)
    assert [ds.sample(i) for i in range(0, len(ds), every)] == eager.samples[::every]
    assert ds.num_text_only_dropped == eager.num_text_only_dropped
    assert ds.problems == Counter(problem.kind for _, problem in eager.bad)
    assert sorted(ds._reported) == sorted(where for where, _ in eager.bad)


@pytest.mark.parametrize("require_image", [False, True])
def test_indexed_dataset_equals_eager_loading_on_the_test_data(
    tmp_path,
    image_dir,  # noqa: F811
    processor,  # noqa: F811
    require_image,
):
    mixed = write_mixed_set(tmp_path, image_dir)  # JSONL with bad records and an invalid line
    for paths, folder in (
        ([SHIPPED_DATA / "finetune.json", SHIPPED_DATA / "pretrain.json"], SHIPPED_DATA),
        ([mixed], image_dir),
    ):
        ds = LazySupervisedDataset(paths, processor, image_folder=folder, require_image=require_image)
        assert_same_as_eager(ds, eager_records(paths, require_image))
    ds = LazySupervisedDataset(mixed, processor, image_folder=image_dir, model_max_length=120)
    reference = eager_records([mixed])
    good = next(i for i, s in enumerate(reference.samples) if s.id == "good1")
    assert ds[good]["input_ids"].tolist() == ds.build(good)["input_ids"].tolist()


def test_indexed_dataset_equals_eager_loading_on_100k_generated_records(tmp_path, processor):  # noqa: F811
    path = write_llava_mix(tmp_path / "mix100k.json", 100_000, seed=3, target_bytes=60_000_000)
    eager = eager_records([path])
    for reference, require_image in ((eager, False), (eager.images_only(), True)):
        ds = LazySupervisedDataset(path, processor, require_image=require_image)
        assert_same_as_eager(ds, reference, every=9)
    assert sum(ds.problems.values()) == 20  # 100_000 // 5003 + 1 bad records, each counted once


def test_byte_offsets_hold_for_non_ascii_text_and_crlf_lines(tmp_path, processor):  # noqa: F811
    records = [
        {
            "id": "é",
            "conversations": [{"from": "human", "value": "Café? ✓ 日本"}, {"from": "gpt", "value": "Oui ☕"}],
        },
        {"id": "plain", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    ]
    listed = tmp_path / "u.json"
    listed.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    lines = tmp_path / "u.jsonl"
    lines.write_bytes(b"\r\n".join(json.dumps(r, ensure_ascii=False).encode() for r in records) + b"\r\n\r\n")
    for path in (listed, lines):
        ds = LazySupervisedDataset(path, processor)
        assert_same_as_eager(ds, eager_records([path]))


def test_the_index_is_reused_and_rebuilt_only_when_the_file_changes(tmp_path):
    path = write_llava_mix(tmp_path / "d.json", 300, seed=1)
    assert open_index(path).built and not open_index(path).built
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same content hash
    assert not open_index(path).built
    text = path.read_text()
    path.write_text(text.replace('"gpt"', '"GPT"', 1))  # same size, new content: quick hash differs
    assert open_index(path).built
    records = json.loads(text)
    path.write_text(json.dumps(records[:-1]))
    again = open_index(path)
    assert again.built and len(again) == 299
    assert json.loads((index_location(path) / "meta.json").read_text())["num_records"] == 299


def test_a_stale_or_broken_index_is_rebuilt(tmp_path):
    path = write_llava_mix(tmp_path / "d.jsonl", 50, seed=1)
    location = index_location(open_index(path).path)
    (location / "rows.npy").write_bytes(b"garbage")
    assert open_index(path).built
    meta = json.loads((location / "meta.json").read_text())
    (location / "meta.json").write_text(json.dumps({**meta, "version": 0}))
    assert open_index(path).built


def test_empty_and_malformed_lists_are_indexed_or_named(tmp_path):
    for text in ("[]", " [ ]\n", "[\n]\n"):
        (tmp_path / "e.json").write_text(text)
        assert len(open_index(tmp_path / "e.json")) == 0
        assert not open_index(tmp_path / "e.json").built  # an empty index is found again
    for text, message in (
        ('{"id": 1}', "expected a JSON list of records, got dict"),
        ('[{"id": 1},]', "not valid JSON"),
        ('[{"id": 1}', "not valid JSON"),
        ('[{"id": 1}] x', "not valid JSON"),
    ):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match=f"{tmp_path / 'bad.json'}: {message}"):
            open_index(tmp_path / "bad.json")


def test_the_index_lives_next_to_the_data_else_in_the_cache(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    path = write_llava_mix(tmp_path / "data" / "d.json", 20, seed=1)
    monkeypatch.delenv(INDEX_DIR_ENV)
    assert index_location(path) == path.parent / "d.json.index"
    open_index(path)
    assert (path.parent / "d.json.index" / "rows.npy").is_file()
    monkeypatch.setattr(ri.os, "access", lambda *a: False)  # a read-only data folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    location = index_location(path)
    assert location.parent == tmp_path / "cache" / "llava_vitsplit" / "record_index"
    assert open_index(path).built and (location / "meta.json").is_file()
    monkeypatch.setenv(INDEX_DIR_ENV, str(tmp_path / "chosen"))
    assert index_location(path).parent == tmp_path / "chosen"


OPEN = (
    "import sys; from llava_vitsplit.data.record_index import open_index\n"
    "try:\n    print('built' if open_index(sys.argv[1]).built else 'found')\n"
    "except ValueError as e:\n    print('error:', e); sys.exit(3)\n"
)
HOLD = (
    "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
    "print('holding', flush=True); time.sleep(600)\n"
)


def _open_while_a_builder_dies(path, processes: int = 2) -> list[subprocess.CompletedProcess]:
    """Start ``processes`` openers while another process holds the build lock, then kill that holder."""
    location = index_location(path)
    location.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(location) + ".lock"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "holding"
    openers = [
        subprocess.Popen([sys.executable, "-c", OPEN, str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    time.sleep(1)
    assert all(p.poll() is None for p in openers)  # waiting on the lock
    holder.kill()
    holder.wait()
    results = []
    for opener in openers:
        out, _ = opener.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(opener.args, opener.returncode, out))
    return results


@pytest.mark.e2e
def test_one_process_builds_while_the_others_wait(tmp_path):
    path = write_llava_mix(tmp_path / "d.json", 2000, seed=1)
    outputs = sorted(r.stdout.strip() for r in _open_while_a_builder_dies(path))
    assert outputs == ["built", "found"]


@pytest.mark.e2e
def test_a_failing_build_is_an_error_in_every_process_not_a_hang(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"id": 1, "conversations": []},\n {"id": 2,, }]')
    for result in _open_while_a_builder_dies(path):
        assert result.returncode == 3 and f"error: {path}: not valid JSON" in result.stdout

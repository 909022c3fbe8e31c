"""Sequence packing (``--packing True``): packed rows compute exactly what one row per sample computes.

Per sample, the logits of every token, the loss and every gradient of a packed batch equal the padded
batch's (text-only, one-image multi-turn, two- and three-image samples), for every registered LLM family
under SDPA and eager attention; positions that do not restart would let the samples attend to each other.
The Trainer runs (plain PyTorch, gradient accumulation) give the same loss and gradient norm per step, and
a packed run resumed from its mid-run checkpoint continues the same curve. ZeRO-3 on two ranks:
``tests/test_train_ranks.py``.
"""

from __future__ import annotations

import json

import pytest
import torch
from _script_runs import SHIPPED_DATA, train_argv
from transformers import AutoModelForCausalLM

from llava_vitsplit.data import (
    IGNORE_INDEX,
    LazySupervisedDataset,
    PackingCollator,
    SupervisedCollator,
    first_fit_rows,
)
from llava_vitsplit.data.packing import fewest_positions_rows
from llava_vitsplit.llms import FAMILIES
from llava_vitsplit.testing.llm_families import make_family_tokenizer, tiny_family_config
from llava_vitsplit.testing.tiny_parts import save_tiny_parts
from llava_vitsplit.train.arguments import parse_args
from llava_vitsplit.train.run import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RED, GREEN, BLUE = "images/00_red_circle.png", "images/08_green_square.png", "images/16_blue_triangle.png"


def record(rid, image, *turns):
    roles = ("human", "gpt")
    conversations = [{"from": roles[i % 2], "value": t} for i, t in enumerate(turns)]
    return {"id": rid, "conversations": conversations} | ({"image": image} if image else {})


@pytest.fixture(scope="module")
def items(tiny_checkpoint, tmp_path_factory):
    """Dataset items: text-only (one and two turns), one image in two turns, three and two images."""
    records = [
        record("text", None, "What is 2 plus 2?", "Four."),
        record("one", RED, "<image>\nWhat shape?", "A circle.", "What colour is it?", "It is red."),
        record("three", [RED, GREEN, BLUE], "1: <image> 2: <image> 3: <image> Colours?", "Red, green, blue."),
        record("chat", None, "Hi there.", "Hello!", "Name a shape.", "A triangle has three sides."),
        record("two", [GREEN, BLUE], "Which is blue?", "The second one."),
    ]
    path = tmp_path_factory.mktemp("packing") / "records.json"
    path.write_text(json.dumps(records))
    _, _, processor = tiny_checkpoint
    ds = LazySupervisedDataset(path, processor, image_folder=SHIPPED_DATA, template="vicuna_v1")
    return [ds[i] for i in range(len(ds))]


def placements(collator: PackingCollator, lengths: list[int]) -> dict[int, tuple[int, int]]:
    """Sample index -> (row, first position) in the collator's packed batch."""
    rows = collator.rows([{"input_ids": torch.zeros(n)} for n in lengths])
    out = {}
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            out[i] = (r, start)
            start += lengths[i]
    return out


def packed_and_padded(items, pad: int):
    lengths = [len(item["input_ids"]) for item in items]
    collator = PackingCollator(pad, max_length=max(lengths) + min(lengths) + 2)
    return collator(items), SupervisedCollator(pad)(items), placements(collator, lengths), lengths


def loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_first_fit_rows_is_deterministic_and_respects_the_capacity():
    assert first_fit_rows([5, 3, 8, 2, 4], 10) == [[2, 3], [0, 4], [1]]  # longest first, first row with room
    assert first_fit_rows([5, 3, 8, 2, 4], 10) == first_fit_rows([5, 3, 8, 2, 4], 10)
    assert first_fit_rows([12, 3], 10) == [[0], [1]]  # an over-long sample gets a row of its own
    assert first_fit_rows([3, 3, 3], 100) == [[0, 1, 2]]


def positions(rows: list[list[int]], lengths: list[int]) -> int:
    return len(rows) * max(sum(lengths[i] for i in row) for row in rows)


def test_packed_rows_never_compute_more_positions_than_padded_ones():
    lengths = [1381, 1454, 675, 1123, 1640, 1588, 1422, 1214]  # CLIP-L images + 98 to 1063 text tokens
    assert positions(first_fit_rows(lengths, 2048), lengths) > len(lengths) * max(lengths)  # 7 rows of 1889
    assert positions(fewest_positions_rows(lengths, 2048), lengths) == len(lengths) * max(lengths)
    mixed = [593] * 6 + [1977] * 2  # short answers and long conversations
    rows = fewest_positions_rows(mixed, 2048)
    assert len(rows) == 4 and positions(rows, mixed) == 4 * 1977
    assert sorted(i for row in rows for i in row) == list(range(8))


def test_a_packed_batch_gives_every_sample_its_own_logits_loss_and_gradients(items, tiny_checkpoint):
    _, model, processor = tiny_checkpoint
    packed, padded, where, lengths = packed_and_padded(items, processor.tokenizer.pad_token_id)
    assert "attention_mask" not in packed and len(packed["input_ids"]) < len(items)
    assert any(sum(1 for r, _ in where.values() if r == row) >= 2 for row in range(len(packed["input_ids"])))
    assert packed["pixel_values"].shape == padded["pixel_values"].shape == (6, 3, 56, 56)
    assert (packed["labels"] != IGNORE_INDEX)[:, 1:].sum() == (padded["labels"] != IGNORE_INDEX)[:, 1:].sum()
    model.eval()
    with torch.no_grad():
        unpacked_logits = model(**{k: v for k, v in padded.items() if k != "labels"}).logits
        inputs = {k: v for k, v in packed.items() if k != "labels"}
        packed_logits = model(**inputs, use_cache=False).logits  # a cache turns the packed mask off
    for i, (row, start) in where.items():
        n = lengths[i]
        torch.testing.assert_close(
            packed_logits[row, start : start + n], unpacked_logits[i, :n], atol=1e-5, rtol=1e-4
        )
        assert packed["position_ids"][row, start : start + n].tolist() == list(range(n))
    unpacked_loss, unpacked_grads = loss_and_grads(model, padded)
    packed_loss, packed_grads = loss_and_grads(model, packed)
    torch.testing.assert_close(packed_loss, unpacked_loss, atol=1e-6, rtol=1e-5)
    assert packed_grads.keys() == unpacked_grads.keys() and any("projector" in n for n in packed_grads)
    for name, grad in unpacked_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_positions_that_do_not_restart_let_packed_samples_attend_to_each_other(items, tiny_checkpoint):
    _, model, processor = tiny_checkpoint
    packed, padded, where, lengths = packed_and_padded(items, processor.tokenizer.pad_token_id)
    later = [(i, row, start) for i, (row, start) in where.items() if start > 0]
    assert later  # a sample that follows another in its row
    running = torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"])
    model.eval()
    with torch.no_grad():
        unpacked = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                         pixel_values=padded["pixel_values"]).logits  # fmt: skip
        mixed = model(input_ids=packed["input_ids"], position_ids=running,
                      pixel_values=packed["pixel_values"], use_cache=False).logits  # fmt: skip
    for i, row, start in later:
        assert not torch.allclose(
            mixed[row, start : start + lengths[i]], unpacked[i, : lengths[i]], atol=1e-3
        )


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_llm_family_keeps_packed_samples_apart(family, attention):
    """The language models alone (the attention masks are theirs): packed logits equal separate rows."""
    tokenizer = make_family_tokenizer(family)
    torch.manual_seed(0)
    config = tiny_family_config(family, tokenizer)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()
    lengths = [9, 4, 7, 1, 6]
    samples = [torch.randint(5, len(tokenizer), (n,)) for n in lengths]
    items = [{"input_ids": s, "labels": s} for s in samples]
    collator = PackingCollator(pad_token_id=0, max_length=12)
    packed = collator(items)
    assert len(packed["input_ids"]) == 3
    padded = SupervisedCollator(pad_token_id=0)(items)  # every token labelled, the first one included
    with torch.no_grad():
        inputs = {"input_ids": packed["input_ids"], "position_ids": packed["position_ids"]}
        logits = model(**inputs, use_cache=False).logits
        for i, (row, start) in placements(collator, lengths).items():
            alone = model(input_ids=samples[i][None]).logits[0]
            torch.testing.assert_close(logits[row, start : start + lengths[i]], alone, atol=1e-5, rtol=1e-4)
        # a sample's first label is no target unpacked; packed, the previous sample must not learn it
        loss = model(**inputs, labels=packed["labels"], use_cache=False).loss
        torch.testing.assert_close(loss, model(**padded, use_cache=False).loss, atol=1e-6, rtol=1e-5)


def test_flash_attention_gets_one_row_whose_positions_give_the_sample_boundaries(items):
    """Flash-attention reads varlen boundaries from ``position_ids`` only for a one-row batch."""
    from transformers.modeling_flash_attention_utils import (
        _is_packed_sequence,
        prepare_fa_kwargs_from_position_ids,
    )

    packed = PackingCollator(0, max_length=64, layout="one_row")(items)
    lengths = [len(item["input_ids"]) for item in items]
    assert packed["input_ids"].shape == (1, sum(lengths)) and sum(lengths) > 64
    assert _is_packed_sequence(packed["position_ids"], batch_size=1)
    (cu_seqlens, _), (max_length, _) = prepare_fa_kwargs_from_position_ids(packed["position_ids"])
    assert cu_seqlens.tolist() == [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    assert max_length == max(lengths)


def test_packing_refuses_an_attention_that_would_mix_samples(capsys):
    base = ["--data_path", "d.json", "--output_dir", "/tmp/x", "--report_to", "none", "--packing", "True"]
    assert parse_args(base)[2].packing and not parse_args(base[:-2])[2].packing
    assert parse_args([*base, "--attn_implementation", "flash_attention_2"])[2].packing
    with pytest.raises(SystemExit):
        parse_args([*base, "--attn_implementation", "paged|sdpa"])
    assert "--packing True cannot keep samples apart with --attn_implementation paged|sdpa" in (
        capsys.readouterr().err
    )


# -- the Trainer: plain PyTorch, gradient accumulation, resume ---------------------------------------------


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return save_tiny_parts(tmp_path_factory.mktemp("packing_parts"), SHIPPED_DATA)


def run(parts, out, *extra: str) -> dict[int, dict]:
    """3 steps of 2 micro-batches of 4; at 200 tokens a row holds two image samples (81) or three text-only (57)."""
    argv = train_argv(parts, out, "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
                      "--model_max_length", "200", "--learning_rate", "5e-3", "--max_steps", "3",
                      "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1", *extra)  # fmt: skip
    assert main(argv) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {e["step"]: e for e in history if "loss" in e}


@pytest.mark.e2e
def test_trainer_steps_packed_equal_unpacked_and_a_packed_run_resumes_exactly(parts, tmp_path):
    unpacked = run(parts, tmp_path / "unpacked")
    packed = run(parts, tmp_path / "packed", "--packing", "True")
    resumed = run(parts, tmp_path / "resumed", "--packing", "True",
                  "--resume_from_checkpoint", str(tmp_path / "packed" / "checkpoint-2"))  # fmt: skip
    assert sorted(unpacked) == sorted(packed) == sorted(resumed) == [1, 2, 3]
    for key in ("loss", "grad_norm"):
        for step, entry in unpacked.items():
            assert packed[step][key] == pytest.approx(entry[key], rel=2e-5, abs=1e-6), (key, step)
        assert resumed[3][key] == pytest.approx(packed[3][key], rel=1e-6, abs=1e-7), key  # step 3 rerun

"""LLaVA data records: reading JSON / JSONL files and checking each record's structure.

A record is ``{"id": ..., "image": "relative/path.jpg" (optional), "conversations": [{"from": "human",
"value": "<image>\\nQuestion"}, {"from": "gpt", "value": "Answer"}, ...]}``. Roles ``human``/``user`` and
``gpt``/``assistant`` are accepted; turns must alternate starting with the user. As in LLaVA-1.5, the
``<image>`` tag of a one-image record (``"image"`` a string) is moved to the start of the first user turn
followed by a newline; a record with an image but no tag gets one there.

Several images (LLaVA-Interleave / OneVision format): ``"image": ["a.jpg", "b.jpg"]`` with one ``<image>``
tag per image in the user turns, left where they are (the i-th tag is the i-th image); a list without tags
gets ``<image>\\n`` per image at the start of the first user turn, in order (``place_image_tags``, the rule
inference uses too). A tag count that differs from the image count, or a tag in an assistant turn, is a
``bad_image_tag`` problem. Every problem is a ``DataProblem`` naming the record and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_vitsplit.llms.registry import IMAGE_TOKEN as IMAGE_TAG
from llava_vitsplit.model.chat_templates import place_image_tags

USER, ASSISTANT = "user", "assistant"
_ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}


class DataProblem(ValueError):
    """A record or image that cannot be trained on; ``kind`` groups problems for counting."""

    def __init__(self, record_id: str, kind: str, detail: str) -> None:
        super().__init__(f"sample {record_id!r}: {kind}: {detail}")
        self.record_id = record_id
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    text: str


@dataclass(frozen=True)
class Sample:
    """One checked record: ``images`` are paths relative to the image folder, in tag order (none: text-only)."""

    id: str
    images: tuple[str, ...]
    turns: tuple[Turn, ...]

    @property
    def num_words(self) -> int:
        return sum(len(turn.text.split()) for turn in self.turns)


@dataclass(frozen=True)
class _BadLine:
    """An unparsable JSONL line, kept so that it is reported like any other bad record."""

    where: str
    error: str


def load_located_records(path: str | Path) -> list[tuple[str, Any]]:
    """``(where, record)`` for every record of a ``.json`` (one list) or ``.jsonl`` (one per line) file.

    ``where`` is ``file:line`` for JSONL and ``file record N`` (1-based) for a JSON list. A file that
    cannot be read, is not UTF-8, not JSON or not a list raises ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from exc
    if path.suffix == ".jsonl":
        records = []
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            records.append((f"{path}:{line_no}", decode_jsonl_line(line, path, line_no)))
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); use .jsonl for one record per line") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return [(f"{path} record {index + 1}", record) for index, record in enumerate(data)]


def decode_jsonl_line(line: str | bytes, path: Path, line_no: int) -> Any:
    """The record on one JSONL line; an unparsable line becomes a ``_BadLine`` that ``parse_record``
    reports with its file and line (a bad line never fails the whole file)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return _BadLine(f"{path.name}:{line_no}", str(exc))


def load_records(path: str | Path) -> list[Any]:
    """All records of a ``.json`` or ``.jsonl`` file (``load_located_records`` without the places)."""
    return [record for _, record in load_located_records(path)]


def record_id(record: Any, index: int) -> str:
    if isinstance(record, _BadLine):
        return record.where
    if isinstance(record, dict) and "id" in record:
        return str(record["id"])
    return f"#{index}"


def parse_record(record: Any, index: int, max_images: int | None = None) -> Sample:
    """Check one raw record and return a ``Sample`` or raise ``DataProblem``.

    ``max_images`` (``--max_images_per_sample``): a record with more images is a ``too_many_images`` problem.
    """
    rid = record_id(record, index)
    if isinstance(record, _BadLine):
        raise DataProblem(rid, "malformed_record", f"invalid JSON line ({record.error})")
    if not isinstance(record, dict):
        raise DataProblem(rid, "malformed_record", f"record is a {type(record).__name__}, not an object")
    image = record.get("image")
    _check_image_field(rid, image)
    if isinstance(image, list) and max_images is not None and len(image) > max_images:
        raise DataProblem(
            rid, "too_many_images", f"{len(image)} images, over --max_images_per_sample={max_images}"
        )
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise DataProblem(rid, "malformed_record", "field 'conversations' must be a non-empty list")
    turns = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise DataProblem(rid, "malformed_record", f"conversations[{i}] is not an object")
        role = _ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise DataProblem(
                rid, "malformed_record", f"conversations[{i}].from={turn.get('from')!r} (use human/gpt)"
            )
        expected = USER if i % 2 == 0 else ASSISTANT
        if role != expected:
            raise DataProblem(
                rid, "malformed_record", f"conversations[{i}] is {role}; turns must alternate user/assistant"
            )
        value = turn.get("value")
        if not isinstance(value, str):
            raise DataProblem(rid, "malformed_record", f"conversations[{i}].value must be a string")
        turns.append(Turn(role, value))
    if turns[-1].role != ASSISTANT:
        turns = turns[:-1]  # a trailing question has no answer to learn
    if not turns:
        raise DataProblem(rid, "malformed_record", "no assistant reply")
    if any(not t.text.strip() for t in turns if t.role == ASSISTANT):
        raise DataProblem(rid, "malformed_record", "empty assistant reply")

    if isinstance(image, list):
        return Sample(id=rid, images=tuple(image), turns=_multi_image_turns(rid, turns, len(image)))
    num_tags = sum(t.text.count(IMAGE_TAG) for t in turns)
    if image is None and num_tags:
        raise DataProblem(
            rid, "image_tag_without_image", f"{num_tags} {IMAGE_TAG} tag(s) but no 'image' field"
        )
    if num_tags > 1 or IMAGE_TAG in "".join(t.text for t in turns[1:]):
        raise DataProblem(
            rid, "bad_image_tag", f"one image needs exactly one {IMAGE_TAG} tag, in the first user turn"
        )
    if image is not None:
        question = turns[0].text.replace(IMAGE_TAG, "").strip()
        turns[0] = Turn(USER, f"{IMAGE_TAG}\n{question}")
    return Sample(id=rid, images=() if image is None else (image,), turns=tuple(turns))


def _check_image_field(rid: str, image: Any) -> None:
    """``image``: absent, a non-empty path, or a non-empty list of them."""
    if image is None or (isinstance(image, str) and image.strip()):
        return
    if isinstance(image, list) and image and all(isinstance(p, str) and p.strip() for p in image):
        return
    raise DataProblem(
        rid,
        "malformed_record",
        f"field 'image' must be a non-empty path or a non-empty list of paths, got {image!r}",
    )


def _multi_image_turns(rid: str, turns: list[Turn], num_images: int) -> tuple[Turn, ...]:
    """The turns of a record with an image list: tags kept in place, or placed first when there are none."""
    in_replies = sum(t.text.count(IMAGE_TAG) for t in turns if t.role == ASSISTANT)
    if in_replies:
        raise DataProblem(rid, "bad_image_tag", f"{in_replies} {IMAGE_TAG} tag(s) in assistant turns")
    num_tags = sum(t.text.count(IMAGE_TAG) for t in turns)
    if num_tags == 0:
        turns[0] = Turn(USER, place_image_tags(turns[0].text, num_images, IMAGE_TAG))
    elif num_tags != num_images:
        raise DataProblem(
            rid,
            "bad_image_tag",
            f"{num_images} images in 'image' but {num_tags} {IMAGE_TAG} tag(s) in the turns "
            "(one tag per image, or none to put them all at the start)",
        )
    return tuple(turns)

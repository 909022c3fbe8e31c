"""An on-disk index of a LLaVA ``.json`` / ``.jsonl`` data file, so no process holds its records in memory.

The first pass over a file parses every record once (``parse_record``) and writes one row per record:
its byte ``offset`` and ``size`` in the file, its ``place`` (the line for JSONL, the 1-based record
number for a JSON list), the sample's word count (the sampler's length estimate), its image count
(``len(image)`` for a list, 1 for a string, 0 when absent) and whether it is ``usable``. The rows are a
numpy structured array (``rows.npy``) loaded memory-mapped; ``meta.json`` keys the index on the data
file's size, modification time and content hash (BLAKE2b of the whole file, plus a quick hash of its
first and last MiB checked on every start). A sample is read when it is fetched: one ``pread`` of its
bytes and one ``json.loads``.

Where the index lives (``index_location``): ``$LLAVA_VITSPLIT_INDEX_DIR`` when set; else next to the
data file (``<file>.index/``) when that folder is writable; else ``$XDG_CACHE_HOME/llava_vitsplit/
record_index`` (default ``~/.cache/...``). It is rebuilt when the file's size or quick hash changes, or
when its modification time changes and so does its full hash. The folder is written atomically.

One process builds while the others wait on a file lock (``<index>.lock``, ``fcntl.flock``); a builder
that fails or dies releases the lock, and each waiting process then tries the build itself and raises
the same error, so no rank waits forever.
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llava_vitsplit.data.records import DataProblem, decode_jsonl_line, parse_record
from llava_vitsplit.util.atomic import write_atomic

logger = logging.getLogger(__name__)

INDEX_VERSION = 1
INDEX_DIR_ENV = "LLAVA_VITSPLIT_INDEX_DIR"
QUICK_HASH_BYTES = 1 << 20
ROW = np.dtype(
    [
        ("offset", "<u8"),
        ("size", "<u4"),
        ("place", "<u4"),
        ("num_words", "<i4"),
        ("num_images", "<u2"),
        ("usable", "u1"),
    ]
)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def index_location(data_path: str | Path) -> Path:
    """The folder that holds ``data_path``'s index (see the module docstring for the order)."""
    data_path = Path(data_path).resolve()
    key = hashlib.blake2b(str(data_path).encode(), digest_size=8).hexdigest()
    configured = os.environ.get(INDEX_DIR_ENV)
    if configured:
        return Path(configured) / f"{data_path.name}-{key}.index"
    if os.access(data_path.parent, os.W_OK):
        return data_path.parent / f"{data_path.name}.index"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "llava_vitsplit" / "record_index" / f"{data_path.name}-{key}.index"


def _quick_hash(path: Path, size: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        digest.update(f.read(QUICK_HASH_BYTES))
        if size > QUICK_HASH_BYTES:
            f.seek(max(QUICK_HASH_BYTES, size - QUICK_HASH_BYTES))
            digest.update(f.read(QUICK_HASH_BYTES))
    return digest.hexdigest()


def _full_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, checked to be UTF-8 text."""
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        data = path.read_bytes()
        data.decode("utf-8")  # only checked: a JSONL file is split as bytes
        return data
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from exc


def _json_list_spans(path: Path, num_bytes: int, text: str) -> Iterator[tuple[int, int, int, Any]]:
    """``(byte offset, byte size, record number, record)`` for each element of a JSON list."""
    start = _WHITESPACE.match(text).end()
    if text[start : start + 1] != "[":  # not a list: the whole-file parse gives the usual message
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); use .jsonl for one record per line") from exc
        raise ValueError(f"{path}: expected a JSON list of records, got {type(parsed).__name__}")
    ascii_only = num_bytes == len(text)  # then character offsets are byte offsets
    decoder = json.JSONDecoder()
    pos, chars_seen, bytes_seen, number = _WHITESPACE.match(text, start + 1).end(), 0, 0, 0
    closed = text[pos : pos + 1] == "]"
    if closed:  # an empty list
        pos = _WHITESPACE.match(text, pos + 1).end()
    while not closed:
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); use .jsonl for one record per line") from exc
        if ascii_only:
            offset, size = pos, end - pos
        else:
            offset = bytes_seen + len(text[chars_seen:pos].encode("utf-8"))
            size = len(text[pos:end].encode("utf-8"))
            chars_seen, bytes_seen = end, offset + size
        number += 1
        yield offset, size, number, record
        pos = _WHITESPACE.match(text, end).end()
        if text[pos : pos + 1] not in (",", "]"):
            raise ValueError(f"{path}: not valid JSON (expected ',' or ']' at character {pos})")
        closed = text[pos] == "]"
        pos = _WHITESPACE.match(text, pos + 1).end()
    if pos < len(text) and _WHITESPACE.match(text, pos).end() != len(text):
        raise ValueError(f"{path}: not valid JSON (extra data after the list at character {pos})")


def _jsonl_spans(path: Path, data: bytes) -> Iterator[tuple[int, int, int, Any]]:
    """``(byte offset, byte size, line number, record)`` for each non-blank line of a JSONL file."""
    offset = 0
    for line_no, line in enumerate(data.split(b"\n"), 1):
        size = len(line)
        if line.strip():
            yield offset, size, line_no, decode_jsonl_line(line, path, line_no)
        offset += size + 1


def _image_count(record: Any) -> int:
    image = record.get("image") if isinstance(record, dict) else None
    if isinstance(image, list):
        return len(image)
    return 0 if image is None else 1


def build_rows(path: Path) -> tuple[np.ndarray, str]:
    """Parse every record of ``path`` once; its index rows and the file's full content hash."""
    data = _read_bytes(path)
    content_hash = hashlib.blake2b(data, digest_size=16).hexdigest()
    if path.suffix == ".jsonl":
        spans = _jsonl_spans(path, data)
    else:  # parsed as text; the bytes are dropped first (one copy of the file in memory, not two)
        num_bytes, text = len(data), data.decode("utf-8")
        del data
        spans = _json_list_spans(path, num_bytes, text)
    columns = {name: array.array(code) for name, code in zip(ROW.names, "QLLlHB", strict=True)}
    for row, (offset, size, place, record) in enumerate(spans):
        try:
            num_words, usable = parse_record(record, row).num_words, 1
        except DataProblem:
            num_words, usable = 0, 0
        for name, value in zip(
            ROW.names, (offset, size, place, num_words, _image_count(record), usable), strict=True
        ):
            columns[name].append(value)
    rows = np.zeros(len(columns["offset"]), dtype=ROW)
    for name, values in columns.items():
        rows[name] = np.frombuffer(values, dtype=values.typecode) if len(values) else 0
    return rows, content_hash


@dataclass
class RecordIndex:
    """The rows of one data file and how to read one record back from it."""

    path: Path  # as the user gave it: places are written with it
    rows: np.ndarray  # [N] of ROW, memory-mapped
    built: bool = False  # this process built it (False: it was found on disk)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def is_jsonl(self) -> bool:
        return self.path.suffix == ".jsonl"

    def place(self, row: int) -> str:
        """``file:line`` (JSONL) or ``file record N`` (JSON list), as the skip accounting names records."""
        number = int(self.rows["place"][row])
        return f"{self.path}:{number}" if self.is_jsonl else f"{self.path} record {number}"

    def record(self, row: int) -> Any:
        """The raw record of ``row`` (one read, one decode); a bad JSONL line comes back as ``_BadLine``."""
        offset, size = int(self.rows["offset"][row]), int(self.rows["size"][row])
        fd = os.open(self.path, os.O_RDONLY)
        try:
            raw = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if self.is_jsonl:
            return decode_jsonl_line(raw, self.path, int(self.rows["place"][row]))
        return json.loads(raw)


def _meta_for(path: Path, stat: os.stat_result, content_hash: str, num_records: int) -> dict:
    return {
        "version": INDEX_VERSION,
        "data_file": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "quick_hash": _quick_hash(path, stat.st_size),
        "content_hash": content_hash,
        "num_records": num_records,
    }


def _load_valid(path: Path, location: Path) -> np.ndarray | None:
    """The stored rows when the index at ``location`` matches the file as it is now, else None."""
    try:
        meta = json.loads((location / "meta.json").read_text())
        stat = path.stat()
        if meta.get("version") != INDEX_VERSION or meta.get("size") != stat.st_size:
            return None
        if meta.get("quick_hash") != _quick_hash(path, stat.st_size):
            return None
        if meta.get("mtime_ns") != stat.st_mtime_ns and meta.get("content_hash") != _full_hash(path):
            return None
        rows = _load_rows(location)
    except (OSError, ValueError, KeyError):
        return None
    return rows if rows.dtype == ROW and len(rows) == meta.get("num_records") else None


def _load_rows(location: Path) -> np.ndarray:
    """Memory-mapped (an empty array cannot be mapped: it is read)."""
    mode = "r" if meta_count(location) else None
    return np.load(location / "rows.npy", mmap_mode=mode, allow_pickle=False)


def meta_count(location: Path) -> int:
    return int(json.loads((location / "meta.json").read_text())["num_records"])


def _write(location: Path, rows: np.ndarray, meta: dict) -> None:
    def fill(tmp: Path) -> None:
        tmp.mkdir()
        np.save(tmp / "rows.npy", rows, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    write_atomic(location, fill)


def open_index(path: str | Path) -> RecordIndex:
    """The index of ``path``, built (by one process at a time) when missing or stale."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    location = index_location(path)
    rows = _load_valid(path, location)
    if rows is not None:
        return RecordIndex(path, rows)
    location.parent.mkdir(parents=True, exist_ok=True)
    with open(location.with_name(location.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, or by the OS if this process dies
        rows = _load_valid(path, location)  # another process may have built it while this one waited
        if rows is not None:
            return RecordIndex(path, rows)
        logger.info("indexing %s (first use; written to %s)", path, location)
        stat = path.stat()  # before reading: a file changed during the pass is re-indexed next time
        built, content_hash = build_rows(path)
        _write(location, built, _meta_for(path, stat, content_hash, len(built)))
    return RecordIndex(path, _load_rows(location), built=True)


__all__ = ["INDEX_DIR_ENV", "ROW", "RecordIndex", "build_rows", "index_location", "open_index"]

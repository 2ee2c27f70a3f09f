"""Streaming records out of .txt, .jsonl and .parquet corpus files, numbered across inputs.

Formats (every rule is about keeping "row i of the output is record i of the input"):

* ``.txt``: one record per line, split on ``\\n`` only (never on other Unicode line breaks,
  which ``str.splitlines`` would honour); a trailing ``\\r`` is stripped (CRLF files), a
  UTF-8 BOM at the start of the file is stripped. Every line is a record, an empty line an
  empty text; a final ``\\n`` ends the last line rather than starting an empty one.
* ``.jsonl``: one JSON object per line with a string text field; a blank line is an error
  naming ``file:line`` (it is almost always a corrupt or concatenated file).
* ``.parquet``: a string column, read in record batches with pyarrow.

Patterns are expanded with :func:`glob.glob` and sorted; the records of all inputs are
numbered 0, 1, ... in the order the inputs are given. :func:`describe_inputs` makes one
pass to count records and hash bytes (what a manifest records and a resume compares);
:func:`iter_records` makes the streaming pass, holding one line or one record batch.

Why not ``grain``: see docs/corpus.md (its sources are random-access or whole-file, it has
no .txt/.jsonl streaming source with these rules, and the GPU image lacks it).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tarka_jax.errors import TarkaError

SUFFIXES = (".txt", ".jsonl", ".parquet")
_BOM = b"\xef\xbb\xbf"
_BLOCK = 1 << 20
_PARQUET_BATCH = 4096


class CorpusError(TarkaError):
    """An input that cannot be read as the documented format (names file and line or row)."""


@dataclasses.dataclass(frozen=True)
class InputFile:
    """One input as a manifest records it."""

    path: str
    size: int
    sha256: str
    records: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Absolute paths: each pattern's glob matches in sorted order, patterns in given order."""
    if not patterns:
        raise CorpusError("no --input given")
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise CorpusError(f"--input {pattern!r} matches no file")
        for path in matches:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"input not found: {path}")
            if not path.endswith(SUFFIXES):
                raise CorpusError(f"input {path} must end in one of {', '.join(SUFFIXES)}")
            paths.append(os.path.abspath(path))
    return paths


def _parquet_file(path: str, columns: Sequence[str]):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") \
            from None
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    for column in columns:
        if column not in names:
            raise CorpusError(f"{path} has no column {column!r} (columns: {names})")
    return pf


def _count_lines(path: str, digest) -> int:
    """Lines of a .txt file (a final line without ``\\n`` counts), hashing as it reads."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _count_jsonl(path: str, digest) -> int:
    """Lines of a .jsonl file; a blank line is an error here, before any compute."""
    n = 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            digest.update(line)
            if not line.strip():
                raise CorpusError(f"{path}:{n} is a blank line (every line of a .jsonl "
                                  "input must be a JSON object)")
    return n


def describe_inputs(paths: Sequence[str], text_field: str = "text",
                    id_field: str | None = None) -> list[InputFile]:
    """Size, sha256 and record count of each input (one pass over its bytes)."""
    out = []
    for path in paths:
        digest = hashlib.sha256()
        if path.endswith(".txt"):
            records = _count_lines(path, digest)
        elif path.endswith(".jsonl"):
            records = _count_jsonl(path, digest)
        else:
            columns = [text_field] + ([id_field] if id_field else [])
            records = _parquet_file(path, columns).metadata.num_rows
            with open(path, "rb") as f:
                while block := f.read(_BLOCK):
                    digest.update(block)
        out.append(InputFile(path, os.path.getsize(path), digest.hexdigest(), records))
    return out


def _txt_records(path: str) -> Iterator[tuple[str, None]]:
    with open(path, "rb") as f:  # binary: iteration splits on b"\n" only
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                yield raw.decode("utf-8"), None
            except UnicodeDecodeError as e:
                raise CorpusError(f"{path}:{n} is not valid UTF-8 ({e.reason})") from None


def _jsonl_records(path: str, text_field: str, id_field: str | None,
                   wanted: Callable[[], bool]) -> Iterator[tuple[str, Any] | None]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                raise CorpusError(f"{path}:{n} is a blank line (every line of a .jsonl "
                                  "input must be a JSON object)")
            if not wanted():
                yield None
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CorpusError(f"{path}:{n} is not valid JSON ({e})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise CorpusError(f'{path}:{n} needs a string "{text_field}" field')
            if id_field is not None and id_field not in record:
                raise CorpusError(f'{path}:{n} has no "{id_field}" field (--id-field)')
            yield record[text_field], (record[id_field] if id_field else None)


def _parquet_records(path: str, text_field: str,
                     id_field: str | None) -> Iterator[tuple[str, Any]]:
    columns = [text_field] + ([id_field] if id_field else [])
    row = 0
    for batch in _parquet_file(path, columns).iter_batches(batch_size=_PARQUET_BATCH,
                                                          columns=columns):
        texts = batch.column(text_field).to_pylist()
        ids = batch.column(id_field).to_pylist() if id_field else [None] * len(texts)
        for text, rid in zip(texts, ids):
            if not isinstance(text, str):
                raise CorpusError(f"{path} row {row}: column {text_field!r} holds "
                                  f"{type(text).__name__}, not a string")
            row += 1
            yield text, rid


def iter_records(paths: Sequence[str], text_field: str = "text", id_field: str | None = None,
                 wanted: Callable[[int], bool] | None = None
                 ) -> Iterator[tuple[int, str, Any] | None]:
    """``(record number, text, id)`` for every record of every input, in order.

    ``id`` is the ``id_field`` value (.jsonl/.parquet) or None. ``wanted(number)`` False
    yields None for that record instead (.jsonl skips parsing it): a process skims past
    the shards other processes own without decoding them.
    """
    number = 0
    want = (lambda: True) if wanted is None else (lambda: wanted(number))
    for path in paths:
        if path.endswith(".txt"):
            if id_field is not None:
                raise CorpusError(f"--id-field needs .jsonl or .parquet inputs, not {path}")
            records = _txt_records(path)
        elif path.endswith(".jsonl"):
            records = _jsonl_records(path, text_field, id_field, want)
        else:
            records = _parquet_records(path, text_field, id_field)
        for record in records:
            yield None if record is None or not want() else (number, *record)
            number += 1

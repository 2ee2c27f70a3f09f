"""Streaming records out of .txt, .jsonl and .parquet corpus files, numbered across inputs.

Formats (every rule is about keeping "row i of the output is record i of the input"):

* ``.txt``: one record per line, split on ``\\n`` only (never on other Unicode line breaks,
  which ``str.splitlines`` would honour); a trailing ``\\r`` is stripped (CRLF files), a
  UTF-8 BOM at the start of the file is stripped. Every line is a record, an empty line an
  empty text; a final ``\\n`` ends the last line rather than starting an empty one.
* ``.jsonl``: one JSON object per line with a string text field; a blank line is an error
  naming ``file:line`` (it is almost always a corrupt or concatenated file).
* ``.parquet``: a string column, read in record batches with pyarrow.

Patterns are expanded with :func:`glob.glob` and sorted; a folder stands for its own
.txt / .jsonl / .parquet files (sorted; not its subfolders); the records of all inputs are
numbered 0, 1, ... in the order the inputs are given. Only regular files are read: a FIFO
or device named ``*.txt`` is refused when named, skipped with a note when a glob or a
folder brought it in (opening a FIFO would wait forever).

Text is validated in the counting pass, before any compute: invalid UTF-8 anywhere (the last
line too) and, in .jsonl, a lone surrogate (``"\\ud800"``) or a bad record are refused as
``file:line``; ``errors="replace"`` reads bad bytes and lone surrogates as U+FFFD instead.

:func:`describe_inputs` makes one pass to count records, hash bytes (what a manifest records
and a resume compares) and validate; :func:`iter_records` makes the streaming pass, holding
one line or one record batch.

Why not ``grain``: see docs/corpus.md (its sources are random-access or whole-file, it has
no .txt/.jsonl streaming source with these rules, and the GPU image lacks it).
"""

from __future__ import annotations

import codecs
import dataclasses
import glob
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from tarka_jax.errors import TarkaError
from tarka_jax.files.text_input import special_kind

SUFFIXES = (".txt", ".jsonl", ".parquet")
ERRORS = ("strict", "replace")
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


def _kind(path: str) -> str | None:
    """None for a regular file (links followed), "missing", or what else it is."""
    if not os.path.lexists(path):
        return "missing"
    return special_kind(path)


def _folder_inputs(folder: str, notes: list[str]) -> list[str]:
    """The folder's own input files, sorted; what else it holds goes into ``notes``."""
    names = sorted(os.listdir(folder))
    take = [n for n in names if n.endswith(SUFFIXES) and _kind(os.path.join(folder, n)) is None]
    other = [n for n in names if n not in take]
    if not take:
        held = ", ".join(other[:5]) + (" ..." if len(other) > 5 else "") or "nothing"
        raise CorpusError(f"--input {folder} is a folder without .txt, .jsonl or .parquet "
                          f"files (it holds: {held}); name the files, or a glob")
    note = f"--input {folder}: reading {len(take)} file(s) ({', '.join(take[:5])}" + (
        " ..." if len(take) > 5 else "") + ")"
    if other:
        note += (f"; skipped {len(other)} other entr{'y' if len(other) == 1 else 'ies'} "
                 f"({', '.join(other[:5])}{' ...' if len(other) > 5 else ''}: not a regular "
                 f"{'/'.join(SUFFIXES)} file; subfolders are not read)")
    notes.append(note)
    return [os.path.abspath(os.path.join(folder, n)) for n in take]


def expand_inputs(patterns: Sequence[str], notes: list[str] | None = None) -> list[str]:
    """Absolute paths: each pattern's glob matches (or folder's files) in sorted order.

    ``notes`` (when given) receives one line per folder read or non-regular file skipped.
    """
    if not patterns:
        raise CorpusError("no --input given")
    notes = [] if notes is None else notes
    paths: list[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            paths += _folder_inputs(pattern, notes)
            continue
        magic = glob.has_magic(pattern)
        matches = sorted(glob.glob(pattern)) if magic else [pattern]
        if not matches:
            raise CorpusError(f"--input {pattern!r} matches no file")
        for path in matches:
            kind = _kind(path)
            if kind == "missing":
                raise FileNotFoundError(f"input not found: {path}")
            if kind is not None and magic:
                notes.append(f"--input {pattern!r}: skipped {path} ({kind}, not a regular file)")
                continue
            if kind is not None:
                raise CorpusError(f"input {path} is {kind}, not a regular file")
            if not path.endswith(SUFFIXES):
                raise CorpusError(f"input {path} must end in one of {', '.join(SUFFIXES)}")
            paths.append(os.path.abspath(path))
    if not paths:
        raise CorpusError(f"--input {' '.join(patterns)}: no regular input file")
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


def _bad_utf8(path: str, line: int, e: UnicodeDecodeError, data: bytes) -> CorpusError:
    what = (f"byte 0x{data[e.start]:02x}" if 0 <= e.start < len(data)
            else "the file ends inside a character")
    return CorpusError(f"{path}:{line}: not valid UTF-8 ({what}); convert the input to "
                       "UTF-8, or pass --errors replace to read bad bytes as U+FFFD")


def _count_lines(path: str, digest, errors: str = "strict") -> int:
    """Lines of a .txt file (a final line without ``\\n`` counts), hashing and (strict)
    checking UTF-8 as it reads."""
    lines, last = 0, b"\n"
    decoder = codecs.getincrementaldecoder("utf-8")("strict") if errors == "strict" else None
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            if decoder is not None:
                pending = decoder.getstate()[0]  # a character cut by the previous block
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as e:
                    data = pending + block
                    line = lines + data.count(b"\n", 0, max(e.start, 0)) + 1
                    raise _bad_utf8(path, line, e, data) from None
            lines += block.count(b"\n")
            last = block[-1:]
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as e:
            raise _bad_utf8(path, lines + (last != b"\n"), e, b"") from None
    return lines + (last != b"\n")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value) -> int | None:
    m = _LONE.search(value) if isinstance(value, str) else None
    return m.start() if m else None


def _check_jsonl_line(path: str, n: int, raw: bytes, text_field: str,
                      id_field: str | None, errors: str) -> None:
    """One .jsonl line as the streaming pass will read it: refuse it here, before compute."""
    record = _parse_jsonl(path, n, raw, text_field, id_field, errors)
    if errors == "strict":
        for field in (text_field, id_field):
            at = _lone_surrogate(record.get(field)) if field else None
            if at is not None:
                raise CorpusError(f'{path}:{n}: field "{field}" holds a lone surrogate at '
                                  f"character {at} (not valid Unicode text); fix the input, "
                                  "or pass --errors replace to read it as U+FFFD")


def _count_jsonl(path: str, digest, text_field: str = "text", id_field: str | None = None,
                 errors: str = "strict") -> int:
    """Lines of a .jsonl file, each validated (JSON object, text field, UTF-8, no lone
    surrogate): a bad line is an error here, before any compute."""
    n = 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            digest.update(line)
            _check_jsonl_line(path, n, line, text_field, id_field, errors)
    return n


def describe_inputs(paths: Sequence[str], text_field: str = "text",
                    id_field: str | None = None, errors: str = "strict") -> list[InputFile]:
    """Size, sha256 and record count of each input (one pass over its bytes, validating)."""
    if errors not in ERRORS:
        raise CorpusError(f"--errors must be one of {', '.join(ERRORS)}, got {errors!r}")
    out = []
    for path in paths:
        digest = hashlib.sha256()
        if path.endswith(".txt"):
            if id_field is not None:
                raise CorpusError(f"--id-field needs .jsonl or .parquet inputs, not {path}")
            records = _count_lines(path, digest, errors)
        elif path.endswith(".jsonl"):
            records = _count_jsonl(path, digest, text_field, id_field, errors)
        else:
            columns = [text_field] + ([id_field] if id_field else [])
            records = _parquet_file(path, columns).metadata.num_rows
            with open(path, "rb") as f:
                while block := f.read(_BLOCK):
                    digest.update(block)
        out.append(InputFile(path, os.path.getsize(path), digest.hexdigest(), records))
    return out


def _txt_records(path: str, errors: str = "strict") -> Iterator[tuple[str, None, int, int]]:
    pos = 0
    with open(path, "rb") as f:  # binary: iteration splits on b"\n" only
        for n, raw in enumerate(f, 1):
            start, pos = pos, pos + len(raw)
            if n == 1 and raw.startswith(_BOM):
                raw, start = raw[len(_BOM):], start + len(_BOM)
            raw = _line_content(raw)
            try:
                yield raw.decode("utf-8", errors), None, start, len(raw)
            except UnicodeDecodeError as e:
                raise _bad_utf8(path, n, e, raw) from None


def _line_content(raw: bytes) -> bytes:
    """A .txt line without its ``\n`` and a trailing ``\r``."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw


def _parse_jsonl(path: str, n: int, raw: bytes, text_field: str, id_field: str | None,
                 errors: str) -> dict:
    if not raw.strip():
        raise CorpusError(f"{path}:{n} is a blank line (every line of a .jsonl "
                          "input must be a JSON object)")
    try:
        record = json.loads(raw.decode("utf-8", errors))
    except UnicodeDecodeError as e:
        raise _bad_utf8(path, n, e, raw) from None
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}:{n} is not valid JSON ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise CorpusError(f'{path}:{n} needs a string "{text_field}" field')
    if id_field is not None and id_field not in record:
        raise CorpusError(f'{path}:{n} has no "{id_field}" field (--id-field)')
    return record


def _jsonl_records(path: str, text_field: str, id_field: str | None,
                   wanted: Callable[[], bool],
                   errors: str = "strict") -> Iterator[tuple[str, Any, int, int] | None]:
    pos = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            start, pos = pos, pos + len(raw)
            if not raw.strip():
                raise CorpusError(f"{path}:{n} is a blank line (every line of a .jsonl "
                                  "input must be a JSON object)")
            if not wanted():
                yield None
                continue
            yield (*_jsonl_text(path, n, raw, text_field, id_field, errors), start, len(raw))


def _jsonl_text(path: str, n: int, raw: bytes, text_field: str, id_field: str | None,
                errors: str) -> tuple[str, Any]:
    """(text, id) of one .jsonl line, as the job embeds it."""
    record = _parse_jsonl(path, n, raw, text_field, id_field, errors)
    text, rid = record[text_field], (record[id_field] if id_field else None)
    if errors == "replace" and _SURROGATE_ESCAPE.search(raw):
        text = _LONE.sub("\ufffd", text)
        rid = _LONE.sub("\ufffd", rid) if isinstance(rid, str) else rid
    return text, rid


def _parquet_records(path: str, text_field: str,
                     id_field: str | None) -> Iterator[tuple[str, Any, int, int]]:
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
            yield text, rid, row - 1, 0


def iter_records(paths: Sequence[str], text_field: str = "text", id_field: str | None = None,
                 wanted: Callable[[int], bool] | None = None, errors: str = "strict",
                 sources: bool = False) -> Iterator[tuple | None]:
    """``(record number, text, id)`` for every record of every input, in order.

    ``id`` is the ``id_field`` value (.jsonl/.parquet) or None. ``wanted(number)`` False
    yields None for that record instead (.jsonl skips parsing it): a process skims past
    the shards other processes own without decoding them. With ``sources=True`` each
    tuple ends with the record's :class:`Source` ``(input, offset, length)``.
    """
    number = 0
    want = (lambda: True) if wanted is None else (lambda: wanted(number))
    for i, path in enumerate(paths):
        if path.endswith(".txt"):
            if id_field is not None:
                raise CorpusError(f"--id-field needs .jsonl or .parquet inputs, not {path}")
            records = _txt_records(path, errors)
        elif path.endswith(".jsonl"):
            records = _jsonl_records(path, text_field, id_field, want, errors)
        else:
            records = _parquet_records(path, text_field, id_field)
        for record in records:
            if record is None or not want():
                yield None
            elif sources:
                yield number, record[0], record[1], Source(i, record[2], record[3])
            else:
                yield number, record[0], record[1]
            number += 1


class Source(NamedTuple):
    """Where a record is in the inputs: input number, and a .txt line's content (BOM, ``\\n``
    and ``\\r`` excluded) or a .jsonl line as ``offset, length`` in bytes; for .parquet,
    ``offset`` is the row in its file and ``length`` 0."""

    input: int
    offset: int
    length: int


def read_source(path: str, source: Source, text_field: str = "text",
                errors: str = "strict") -> str:
    """The text of the record at ``source`` in the input ``path``, read as the job read it.

    Reads ``source.length`` bytes at ``source.offset`` (.txt, .jsonl) or one row group
    (.parquet); the caller bounds ``length`` and checks the file (a search index is
    untrusted input).

    Raises:
      CorpusError: the bytes there are not such a record.
    """
    if path.endswith(".parquet"):
        pf = _parquet_file(path, [text_field])
        first = 0
        for g in range(pf.metadata.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            if source.offset < first + rows:
                text = pf.read_row_group(g, columns=[text_field]).column(0)[
                    source.offset - first].as_py()
                if not isinstance(text, str):
                    raise CorpusError(f"{path} row {source.offset} is not a string")
                return text
            first += rows
        raise CorpusError(f"{path} has no row {source.offset}")
    with open(path, "rb") as f:
        f.seek(source.offset)
        raw = f.read(source.length)
    if len(raw) != source.length:
        raise CorpusError(f"{path} ends before byte {source.offset + source.length}")
    try:
        if path.endswith(".jsonl"):
            return _jsonl_text(path, 0, raw, text_field, None, errors)[0]
        return raw.decode("utf-8", errors)  # the line's content, as stored
    except UnicodeDecodeError:
        raise CorpusError(f"{path}: bytes {source.offset}..{source.offset + source.length} "
                          "are not UTF-8 text") from None

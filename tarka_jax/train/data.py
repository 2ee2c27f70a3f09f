"""Training data files: which files a run may read, the one reader of them, and a batch
iterator's resumable position.

One reader for every loop, recipe step and held-out hook, following
:mod:`tarka_jax.files.text_input`'s rules for text from outside: a UTF-8 BOM is dropped,
CRLF / CR line ends become ``\\n``, invalid UTF-8 is refused as ``FILE:LINE``, and a text
holding a lone surrogate (a JSON ``"\\ud800"`` escape) is refused as ``FILE:LINE`` before
any tokenizer sees it. Formats:

* ``.txt``: one text per line (``text_input.split_lines``: only ``\\n`` separates);
* ``.jsonl`` / ``.jsonl.gz``: one JSON object per line (blank lines skipped), read by
  :func:`tarka_jax.files.jsonfiles.read_jsonl`;
* ``.parquet``: rows of a table (needs pyarrow, said before any model is loaded).

A listed file must exist, be a regular file (a FIFO named ``x.txt`` would hang a reader)
and end in one of the suffixes the caller accepts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from tarka_jax.errors import TarkaError
from tarka_jax.files.jsonfiles import read_jsonl
from tarka_jax.files.text_input import TextInputError, read_file, split_lines

SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")  # raw-text corpora
RECORD_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")  # records with named fields


class DataError(TarkaError):
    """Unreadable or empty training data (the message names the file and line)."""


def check_files(paths: Sequence[str], what: str, suffixes: tuple[str, ...] = SUFFIXES) -> None:
    """Existence, kind and format of data files, before any model is loaded."""
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what} file not found: {path}")
        if not os.path.isfile(path):
            raise DataError(f"{what} file {path} is not a regular file")
        if not path.endswith(suffixes):
            raise DataError(f"{what} file {path} must end in one of {suffixes}")
        if path.endswith(".parquet"):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise DataError(f"{path}: reading .parquet needs pyarrow "
                                "(pip install pyarrow)") from None


def _check_unicode(where: str, texts: Sequence[str]) -> None:
    """A lone surrogate (from a JSON escape) cannot be tokenised as UTF-8: name its line."""
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise DataError(f"{where} holds a lone surrogate {text[e.start]!r}: not valid "
                            "Unicode text") from None


def file_records(path: str) -> list[tuple[str, dict]]:
    """``[(FILE:LINE or FILE row N, record)]`` of one .jsonl / .jsonl.gz / .parquet file."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return [(f"{path} row {i}", r) for i, r in enumerate(rows)]
    return [(f"{path}:{n}", r) for n, r in read_jsonl(path, None, DataError)]


def read_texts(path: str, text_field: str = "text") -> list[str]:
    """Non-empty texts of one file: .txt (one per line), else the string ``text_field``."""
    if path.endswith(".txt"):
        try:
            texts = split_lines(read_file(path))
        except TextInputError as e:
            raise DataError(str(e)) from None
    elif path.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if text_field not in table.column_names:
            raise DataError(f"{path} has no column {text_field!r} (columns: "
                            f"{table.column_names})")
        texts = [t for t in table.column(text_field).to_pylist() if isinstance(t, str)]
    elif path.endswith((".jsonl", ".jsonl.gz")):
        records = read_jsonl(path, text_field, DataError)  # a string field, or FILE:LINE
        for n, record in records:
            _check_unicode(f"{path}:{n}", [record[text_field]])
        texts = [record[text_field] for _, record in records]
    else:
        raise DataError(f"unsupported data file {path}; use {SUFFIXES}")
    return [t for t in texts if t.strip()]


def read_corpus(paths: Sequence[str], text_field: str, what: str = "data.train") -> list[str]:
    """The non-empty texts of every listed file, in order; none at all is an error."""
    check_files(paths, what)
    texts = [t for p in paths for t in read_texts(p, text_field)]
    if not texts:
        raise DataError(f"{what} files {list(paths)} hold no non-empty text")
    return texts


def read_records(paths: Sequence[str], where: Mapping[str, object] | None,
                 what: str) -> list[tuple[str, dict]]:
    """``[(FILE:LINE, record)]`` of the listed files whose fields equal ``where``, in order;
    none kept is an error naming the files and the filter."""
    check_files(paths, what, RECORD_SUFFIXES)
    where = dict(where or {})
    out = [(loc, r) for path in paths for loc, r in file_records(path)
           if all(r.get(k) == v for k, v in where.items())]
    if not out:
        raise DataError(f"{what} files {list(paths)} hold no rows"
                        + (f" where {where}" if where else ""))
    return out


def text_columns(records, columns: Sequence[str], key: str) -> list[tuple[str, ...]]:
    """The non-empty string fields ``columns`` (config key ``key``) of each record; anything
    else is an error naming the file and line."""
    rows = []
    for loc, record in records:
        missing = [c for c in columns
                   if not isinstance(record.get(c), str) or not record[c].strip()]
        if missing:
            raise DataError(f"{loc} needs non-empty string field(s) {missing} "
                            f"({key} = {list(columns)})")
        row = tuple(record[c] for c in columns)
        _check_unicode(loc, row)
        rows.append(row)
    return rows


class EpochPosition:
    """Where a batch iterator is: ``(epoch, index)`` of the next batch, plus what a resume
    must find unchanged (seed, item count, batch size). Both loops' iterators build on it.

    ``get_state()`` is saved with every checkpoint and ``set_state()`` restores it, refusing
    a position that belongs to other data or another config.
    """

    count_key = "num_items"  # the state's name for the item count (num_texts, num_rows)

    def __init__(self, count: int, batch_size: int, seed: int, process_index: int,
                 process_count: int, items: str):
        if count < batch_size:
            raise DataError(f"data.batch_size={batch_size} exceeds the {count} training {items}")
        if batch_size % process_count:
            raise DataError(f"data.batch_size={batch_size} must divide over {process_count} "
                            "hosts")
        self.count, self.batch_size, self.seed = count, batch_size, int(seed)
        self.process_index, self.process_count = process_index, process_count
        self.epoch, self.index = 0, 0

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed,
                self.count_key: self.count, "batch_size": self.batch_size}

    def set_state(self, state: dict) -> None:
        mine = self.get_state()
        for key in ("seed", self.count_key, "batch_size"):
            if state.get(key) != mine[key]:
                raise DataError(f"cannot resume: the checkpoint's data {key} is {state.get(key)} "
                                f"but the config gives {mine[key]} (data or config changed)")
        self.epoch, self.index = int(state["epoch"]), int(state["index"])

    def advance(self, batches_in_epoch: int) -> None:
        """Past the batch just made; the next epoch after the last one."""
        self.index += 1
        if self.index >= batches_in_epoch:
            self.epoch, self.index = self.epoch + 1, 0

    def local_rows(self) -> slice:
        """This process's contiguous rows of a global batch."""
        n = self.batch_size // self.process_count
        return slice(self.process_index * n, (self.process_index + 1) * n)

    def __iter__(self):
        return self

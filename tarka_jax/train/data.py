"""Training data files: which files a run may read, and their non-empty texts.

One rule for every loop and recipe step: a listed file must exist and end in one of
:data:`SUFFIXES`; ``.parquet`` needs pyarrow, said before any model is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tarka_jax.errors import TarkaError
from tarka_jax.files.jsonfiles import read_jsonl

SUFFIXES = (".txt", ".jsonl", ".parquet")


class DataError(TarkaError):
    """Unreadable or empty training data."""


def check_files(paths: Sequence[str], what: str, suffixes: tuple[str, ...] = SUFFIXES) -> None:
    """Existence and format of data files, before any model is loaded."""
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} file not found: {path}")
        if not path.endswith(suffixes):
            raise DataError(f"{what} file {path} must end in one of {suffixes}")
        if path.endswith(".parquet"):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise DataError(f"{path}: reading .parquet needs pyarrow "
                                "(pip install pyarrow)") from None


def read_texts(path: str, text_field: str = "text") -> list[str]:
    """Non-empty texts of one file: .txt (one per line), .jsonl or .parquet (``text_field``)."""
    texts: list[str] = []
    if path.endswith(".txt"):
        with open(path, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f]
    elif path.endswith(".jsonl"):
        texts = [record[text_field] for _, record in read_jsonl(path, text_field, DataError)]
    elif path.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if text_field not in table.column_names:
            raise DataError(f"{path} has no column {text_field!r} (columns: "
                            f"{table.column_names})")
        texts = [t for t in table.column(text_field).to_pylist() if isinstance(t, str)]
    else:
        raise DataError(f"unsupported data file {path}; use {SUFFIXES}")
    return [t for t in texts if t.strip()]


def read_corpus(paths: Sequence[str], text_field: str, what: str = "data.train") -> list[str]:
    check_files(paths, what)
    texts = [t for p in paths for t in read_texts(p, text_field)]
    if not texts:
        raise DataError(f"{what} files {list(paths)} hold no non-empty text")
    return texts

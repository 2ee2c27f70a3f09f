"""Top-k search over an ``embed-corpus`` folder, one memory-mapped chunk at a time.

The corpus matrix is never in memory at once, let alone twice: each shard is read in
chunks of ``chunk_rows`` rows, scored against every query by one jitted function
(``[Q, D] @ [C, D]^T``, then ``lax.top_k``) that also merges the chunk's best with the
running best, so one program serves every chunk (the last one is padded and masked).
Scores are cosine similarities (``"cosine"``, the default for every model we know) or
dot products; ties keep the lower row number, as ``np.argsort(kind="stable")`` would.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from tarka_jax.corpus.store import (
    CorpusOutputError,
    chunk_rows,
    ids_name,
    read_embeddings,
    rows_name,
    shard_rows,
    text_checksum,
)
from tarka_jax.errors import UsageError
from tarka_jax.nn.numerics import l2_normalize

DEFAULT_CHUNK_ROWS = 65_536


@functools.partial(jax.jit, static_argnames=("k", "cosine"))
def _merge_chunk(best_scores, best_rows, queries, chunk, first_row, valid, *, k, cosine):
    """Best ``k`` of (running best ∪ this chunk) per query.

    best_scores / best_rows: [Q, k] float32 / int32; queries [Q, D]; chunk [C, D];
    rows >= ``valid`` of the chunk are padding and never win.
    """
    if cosine:
        chunk = l2_normalize(chunk)
    scores = jnp.einsum("qd,cd->qc", queries, chunk,
                        precision=jax.lax.Precision.HIGHEST)  # [Q, C]
    scores = jnp.where(jnp.arange(chunk.shape[0])[None] < valid, scores, -jnp.inf)
    rows = first_row + jnp.arange(chunk.shape[0], dtype=jnp.int32)  # [C]
    # Running best first: on equal scores top_k prefers the earlier column = lower row.
    all_scores = jnp.concatenate([best_scores, scores], axis=1)  # [Q, k + C]
    all_rows = jnp.concatenate([best_rows, jnp.broadcast_to(rows, scores.shape)], axis=1)
    top, where = jax.lax.top_k(all_scores, k)  # [Q, k]
    return top, jnp.take_along_axis(all_rows, where, axis=1)


def search_index(folder: str, queries: np.ndarray, top_k: int = 10, *,
                 similarity: str = "cosine", chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """``(scores [Q, k] float32, rows [Q, k] int64)``: the best ``k`` corpus rows per query.

    ``queries`` float32 [Q, D] with D the index's dimension. ``k`` is capped at the corpus
    size; a row index ``r`` is record ``r`` (``read_ids(folder)[r]`` is its id), or with
    ``--chunking chunks`` window ``r`` (``read_rows(folder)[r]`` says which).
    """
    if similarity not in ("cosine", "dot"):
        raise UsageError(f"index search supports cosine and dot similarity, not {similarity!r}")
    emb = read_embeddings(folder, mmap=True)
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    n, dim = emb.shape
    if queries.shape[1] != dim:
        raise UsageError(f"queries are {queries.shape[1]}-d but the index {folder} is {dim}-d")
    if top_k < 1:
        raise UsageError(f"top_k must be at least 1, got {top_k}")
    k = min(top_k, n)
    if k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    cosine = similarity == "cosine"
    q = jnp.asarray(l2_normalize(np.asarray(queries, np.float32)) if cosine else queries)
    rows_per_chunk = min(chunk_rows, n)
    best = (jnp.full((len(queries), k), -jnp.inf, jnp.float32),
            jnp.full((len(queries), k), -1, jnp.int32))
    for first, shard in emb.chunks():
        for start in range(0, len(shard), rows_per_chunk):
            part = shard[start:start + rows_per_chunk]
            valid = len(part)
            if valid < rows_per_chunk:  # one shape for every chunk: pad, mask the rest
                # A fresh array each time: on CPU jax may alias a numpy buffer and run
                # asynchronously, so refilling one shared pad raced with the previous chunk.
                part = np.concatenate([part, np.zeros((rows_per_chunk - valid, dim),
                                                      np.float32)])
            best = _merge_chunk(*best, q, np.asarray(part), np.int32(first + start),
                                np.int32(valid), k=k, cosine=cosine)
    scores, rows = jax.device_get(best)
    return np.asarray(scores, np.float32), np.asarray(rows, np.int64)


def print_index_hits(model, folder: str, queries: list[str], top_k: int = 5,
                     batch_size: int = 32, truncate_dim: int | None = None) -> None:
    """What ``tarka-jax search --index DIR`` prints: per query, rank, score, the record's
    text (a window's text with ``--chunking chunks``) and its label, as ``search --docs``
    prints them; a line on stderr when a query was truncated."""
    from tarka_jax.corpus.job import model_sha256
    from tarka_jax.inference.chunked import EncodeReport

    emb = read_embeddings(folder, mmap=True)  # validated against the files
    manifest = emb.manifest
    if manifest["model_sha256"] != model_sha256(model):
        raise CorpusOutputError(f"the index {folder} was built with model {manifest['model']!r} "
                         f"(another hash); embed the queries with that model")
    truncate_dim = truncate_dim or manifest["truncate_dim"]
    said = EncodeReport()
    query_emb = model.encode_query(queries, batch_size=batch_size, truncate_dim=truncate_dim,
                                   report=said)
    if said.summary():
        print(f"tarka-jax search: queries: {said.summary()}", file=sys.stderr)
    hits = IndexHits(folder, emb)
    if chunk_rows(manifest):  # a record scores as its best window, as with --docs
        scores, rows = best_windows(folder, query_emb, top_k, hits,
                                    similarity=model.similarity_fn_name)
    else:
        scores, rows = search_index(folder, query_emb, top_k,
                                    similarity=model.similarity_fn_name)
    for query, s_row, r_row in zip(queries, scores, rows):
        print(f"query: {query}")
        for rank, (score, r) in enumerate(zip(s_row, r_row), 1):
            text, label = hits.describe(int(r))
            print(format_hit(rank, float(score), text, label))


def best_windows(folder: str, queries: np.ndarray, top_k: int, hits: IndexHits,
                 similarity: str = "cosine") -> tuple[list, list]:
    """Per query, the best ``top_k`` records of a ``--chunking chunks`` index, each as its
    best window: ``(scores, rows)`` lists of arrays (a list may be shorter than ``top_k``
    when the index holds fewer records). Searches ``4 * top_k`` windows, then twice as
    many, until ``top_k`` records are among them or every window is."""
    n = len(hits.emb)
    want = min(top_k, hits.manifest["records"])
    k = min(4 * top_k, n)
    while True:
        scores, rows = search_index(folder, queries, k, similarity=similarity)
        out_s, out_r = [], []
        for s_row, r_row in zip(scores, rows):
            records = np.array([hits.record_of(int(r)) for r in r_row], np.int64)
            _, first = np.unique(records, return_index=True)
            first = np.sort(first)[:want]  # each record's first (best) window, in rank order
            out_s.append(s_row[first])
            out_r.append(r_row[first])
        if k == n or all(len(r) == want for r in out_r):
            return out_s, out_r
        k = min(2 * k, n)


def snippet(text: str, width: int = 100) -> str:
    """``text`` on one line (whitespace runs as one space), cut to ``width`` characters."""
    more = len(text) > 16 * width  # bounded work on a long text
    text = " ".join(text[:16 * width].split())
    return text if len(text) <= width and not more else text[:width - 3] + "..."


def format_hit(rank: int, score: float, text: str, label: str) -> str:
    """One hit as ``search`` prints it (``--docs`` and ``--index`` alike)."""
    return f"  {rank:>2}. {score:.4f}  {snippet(text)}  [{label}]"


#: The most bytes one record's source may span when it is read back (a larger claim in a
#: rows table is refused as corrupt; the reader itself holds one line of any length).
MAX_SOURCE_BYTES = 256 << 20


class IndexHits:
    """What a row of an index is: its text (read back from the input the manifest names)
    and its label (``--id-field`` value, else ``line N`` of its input as ``search --docs``
    numbers lines, 1-based; ``row N`` of a .parquet file, 0-based).

    The folder is untrusted input: every value read from it is checked against the
    manifest (input number, byte range within the recorded size, at most
    :data:`MAX_SOURCE_BYTES`, spans within the text); a value outside is a
    :class:`CorpusOutputError` naming the file. An input that is gone, not a regular file,
    of another size or whose bytes there no longer hash to the recorded checksum is shown
    as "text unavailable" instead: the checksum also means a hostile index can only show
    text whose hash it already held.
    """

    def __init__(self, folder: str, emb):
        self.folder, self.emb, self.manifest = folder, emb, emb.manifest
        self._tables: dict[int, np.ndarray] = {}
        self._ids: dict[int, list] = {}
        self._first_record = np.cumsum([0] + [int(i.get("records", 0))
                                              for i in self.manifest["inputs"]])

    def describe(self, row: int) -> tuple[str, str]:
        """(text, label) of embedding row ``row``."""
        m = self.manifest
        if m["version"] < 2:  # no rows table: the record number (or id) only
            return ("(no text: an index of format version 1)",
                    str(self._id(row, row // m["shard_size"])))
        k = int(np.searchsorted(self.emb.starts, row, side="right") - 1)
        where = f"{os.path.join(self.folder, rows_name(k))} row {row - self.emb.starts[k]}"
        record, i, offset, length, checksum, chunk, _, _, a, b = (
            int(x) for x in self._table(k)[row - self.emb.starts[k]])
        size = m["shard_size"]
        if not k * size <= record < k * size + shard_rows(m, k) or not 0 <= i < len(
                m["inputs"]) or not self._first_record[i] <= record < self._first_record[i + 1]:
            raise CorpusOutputError(f"{where} names record {record} of input {i}, outside what "
                                    "the manifest holds: the index is corrupt")
        label = self._id(record, k) if m.get("id_field") else self._line(i, record)
        text = self._source(where, m["inputs"][i], offset, length, checksum)
        if text is None or not chunk_rows(m):
            return text or self._why, label
        if not 0 <= a <= b <= len(text):
            raise CorpusOutputError(f"{where}: characters {a}..{b} lie outside its text of "
                                    f"{len(text)}: the index is corrupt")
        return text[a:b], f"{label}, chunk {chunk}"

    def record_of(self, row: int) -> int:
        """The record (``text_index``) of embedding row ``row`` (format version 2)."""
        k = int(np.searchsorted(self.emb.starts, row, side="right") - 1)
        return int(self._table(k)[row - self.emb.starts[k], 0])

    def _table(self, k: int) -> np.ndarray:
        if k not in self._tables:
            self._tables[k] = np.load(os.path.join(self.folder, rows_name(k)), mmap_mode="r")
        return self._tables[k]

    def _line(self, i: int, record: int) -> str:
        entry, local = self.manifest["inputs"][i], record - int(self._first_record[i])
        where = f"row {local}" if str(entry.get("path")).endswith(".parquet") \
            else f"line {local + 1}"
        if len(self.manifest["inputs"]) == 1:
            return where
        return f"{os.path.basename(str(entry.get('path')))} {where}"

    def _id(self, record: int, k: int):
        if not self.manifest.get("id_field"):
            return record
        if k not in self._ids:
            path = os.path.join(self.folder, ids_name(k))
            if os.path.getsize(path) > MAX_SOURCE_BYTES:
                raise CorpusOutputError(f"{path} is larger than {MAX_SOURCE_BYTES} bytes: "
                                        "the index is corrupt")
            with open(path, encoding="utf-8") as f:
                ids = json.load(f)
            if not isinstance(ids, list) or len(ids) != shard_rows(self.manifest, k):
                raise CorpusOutputError(f"{path} does not hold {shard_rows(self.manifest, k)} "
                                        "ids: the index is corrupt")
            self._ids[k] = ids
        return self._ids[k][record - k * self.manifest["shard_size"]]

    def _source(self, where: str, entry: dict, offset: int, length: int,
                checksum: int) -> str | None:
        """The record's text, or None (``self._why`` says why) when its input changed."""
        from tarka_jax.corpus.reader import SUFFIXES, Source, read_source
        from tarka_jax.files.text_input import special_kind

        path, size, records = entry.get("path"), entry.get("size"), entry.get("records")
        if not (isinstance(path, str) and os.path.isabs(path) and path.endswith(SUFFIXES)
                and isinstance(size, int) and isinstance(records, int)):
            raise CorpusOutputError(f"{self.folder}: the manifest names an input {path!r} that "
                                    "is not an absolute .txt/.jsonl/.parquet path")
        parquet = path.endswith(".parquet")
        ok = (0 <= offset < records and length == 0) if parquet else (
            0 <= offset and 0 <= length <= MAX_SOURCE_BYTES and offset + length <= size)
        if not ok:
            raise CorpusOutputError(f"{where} points at bytes {offset}+{length} outside input "
                                    f"{path} ({size} bytes): the index is corrupt")
        if not os.path.lexists(path) or special_kind(path) or os.path.getsize(path) != size:
            self._why = f"(text unavailable: {path} is gone or changed since it was embedded)"
            return None
        try:
            text = read_source(path, Source(0, offset, length), self.manifest["text_field"],
                               self.manifest.get("errors", "strict"))
        except (ValueError, OSError):
            text = None
        if text is None or text_checksum(text) != checksum:
            self._why = f"(text unavailable: {path} changed since it was embedded)"
            return None
        return text


__all__ = ["IndexHits", "best_windows", "format_hit", "print_index_hits", "search_index", "snippet"]

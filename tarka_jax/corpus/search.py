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

import jax
import jax.numpy as jnp
import numpy as np

from tarka_jax.corpus.store import CorpusOutputError, ids_name, read_embeddings
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
    size; a row index ``r`` is record ``r`` (``read_ids(folder)[r]`` is its id).
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
    """What ``tarka-jax search --index DIR`` prints: per query, rank, score and record id."""
    from tarka_jax.corpus.job import model_sha256

    manifest = read_embeddings(folder, mmap=True).manifest  # validated against the files
    if manifest["model_sha256"] != model_sha256(model):
        raise CorpusOutputError(f"the index {folder} was built with model {manifest['model']!r} "
                         f"(another hash); embed the queries with that model")
    truncate_dim = truncate_dim or manifest["truncate_dim"]
    emb = model.encode_query(queries, batch_size=batch_size, truncate_dim=truncate_dim)
    scores, rows = search_index(folder, emb, top_k, similarity=model.similarity_fn_name)
    ids = _ids_of(folder, manifest, np.unique(rows))
    for query, s_row, r_row in zip(queries, scores, rows):
        print(f"query: {query}")
        for rank, (score, r) in enumerate(zip(s_row, r_row), 1):
            print(f"  {rank:>2}. {score:.4f}  [{ids[int(r)]}]")


def _ids_of(folder: str, manifest: dict, rows: np.ndarray) -> dict:
    """{row: id} for the hit rows only (reads just their shards' id files)."""
    if not manifest.get("id_field"):
        return {int(r): int(r) for r in rows}
    size, out = manifest["shard_size"], {}
    for k in np.unique(rows // size):
        with open(os.path.join(folder, ids_name(int(k))), encoding="utf-8") as f:
            shard_ids = json.load(f)
        out.update({int(r): shard_ids[int(r) - k * size] for r in rows if r // size == k})
    return out


__all__ = ["print_index_hits", "search_index"]

"""Corpora: embed many records into resumable shards, read them back, search them.

* :mod:`~tarka_jax.corpus.reader` -- records streamed out of .txt / .jsonl / .parquet, numbered;
* :mod:`~tarka_jax.corpus.store` -- the output folder (``shard-%06d.npy`` + ``manifest.json``) and
  :func:`read_embeddings`;
* :mod:`~tarka_jax.corpus.job` -- ``embed_corpus``: shard by shard, resumable, on many processes;
* :mod:`~tarka_jax.corpus.search` -- top-k search over a folder, one memory-mapped chunk at a time;
* :mod:`~tarka_jax.corpus.cli` -- ``tarka-jax embed-corpus``.
"""

from tarka_jax.corpus.store import ShardedEmbeddings, read_embeddings, read_ids

__all__ = ["ShardedEmbeddings", "read_embeddings", "read_ids"]

"""Texts in, embeddings out: the Embedder, the sentence-transformers drop-in and what they run on.

* :mod:`~tarka_jax.inference.embedder` -- :class:`Embedder` (``encode``, ``encode_query``,
  ``encode_document``, numpy out) and the functional :func:`load`;
* :mod:`~tarka_jax.inference.sentence_transformer` -- ``SentenceTransformer``'s constructor over it;
  :mod:`~tarka_jax.inference.st_args` -- the sentence-transformers arguments it honours or refuses;
* :mod:`~tarka_jax.inference.batching` -- the shape policy: which texts share a pass, at what shape;
* :mod:`~tarka_jax.inference.placement` / :mod:`~tarka_jax.inference.process_passes` -- which
  devices, which shardings, one pass schedule over processes;
* :mod:`~tarka_jax.inference.similarity`, :mod:`~tarka_jax.inference.quantize` -- scores and
  int8 / binary output with sentence-transformers' semantics;
* :mod:`~tarka_jax.inference.loading` -- a checkpoint's tokenizer at a ``max_seq_length``;
* :mod:`~tarka_jax.inference.cli` -- ``tarka-jax embed`` and ``tarka-jax search``.
"""

from tarka_jax.inference.embedder import Embedder, load
from tarka_jax.inference.sentence_transformer import SentenceTransformer

__all__ = ["Embedder", "SentenceTransformer", "load"]

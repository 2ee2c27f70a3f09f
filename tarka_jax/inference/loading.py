"""The functional API's loader: ``load(path) -> (config, params, tokenizer)``.

Also how a checkpoint's tokenizer is built at a given ``max_seq_length``, which
:class:`~tarka_jax.Embedder` and the demo share.
"""

from __future__ import annotations

from tarka_jax.inference import st_args
from tarka_jax.text.tokenizer import TextTokenizer


def load(path_or_hub_id, *, max_seq_length: int | None = None, revision: str | None = None,
         cache_dir: str | None = None, token: str | bool | None = None):
    """``(config, params, tokenizer)`` for the functional API.

    ``params`` is a float32 numpy tree for :func:`tarka_jax.embed`; ``tokenizer``
    a :class:`~tarka_jax.text.tokenizer.TextTokenizer` producing its batches.
    """
    from tarka_jax.convert import open_model

    ckpt = open_model(path_or_hub_id, revision=revision, cache_dir=cache_dir, token=token)
    return ckpt.config, ckpt.params, tokenizer_for(ckpt, max_seq_length)


def tokenizer_for(ckpt, max_seq_length: int | None) -> TextTokenizer:
    """The checkpoint's tokenizer, truncating at ``max_seq_length`` (None: the checkpoint's)."""
    positions = ckpt.config.max_position_embeddings
    max_seq_length = st_args.check_max_seq_length(max_seq_length, positions)
    return TextTokenizer.from_folder(
        ckpt.folder, ckpt.meta.max_seq_length if max_seq_length is None else max_seq_length,
        max_position_embeddings=positions)


__all__ = ["load", "tokenizer_for"]

"""Token ids -> embeddings: the planned passes of an :class:`~tarka_jax.Embedder`, run.

Why a module: the Embedder's job is the sentence-transformers API (arguments, prompts,
outputs); this one runs what :mod:`tarka_jax.inference.batching` planned: one jitted
forward shared by every Embedder (exported programs when a program cache is active),
passes pipelined, each result put back at its input index. Truncated texts and
chunked windows (:mod:`tarka_jax.inference.chunked`) run through the same functions.
"""

from __future__ import annotations

import jax
import numpy as np

from tarka_jax.inference import batching
from tarka_jax.nn.encoder import embed, token_embeddings
from tarka_jax.runtime import program_cache

# One jitted forward for every Embedder: params are an argument, the config and
# the compute settings are static, so equal settings share compiled programs.
_embed_jit = jax.jit(embed, static_argnames=("config", "dtype", "attention",
                                             "segments_per_row", "remat", "normalize"))
_tokens_jit = jax.jit(token_embeddings, static_argnames=("config", "dtype", "attention"))

AUTO_PROGRESS_TEXTS = 256  # show_progress_bar=None shows a bar above this many texts


def embed_ids(model, ids: list[list[int]], *, batch_size: int, pack: bool,
              show_progress_bar: bool | None, normalize: bool = True) -> np.ndarray:
    """float32 ``[len(ids), dim]``: the embedding of each token-id sequence, in order.

    ``pack``: several sequences per row (:func:`batching.plan_packed`), else one per
    row sorted by length (:func:`batching.plan_sorted`). ``normalize=False``: the
    head's output before the model's L2 normalisation (what chunked "mean" averages).
    """
    policy = _policy(model)
    if pack:
        plan = batching.plan_packed(ids, batch_size, model.pack_width_sets,
                                    segments=model.pack_segments, slot_cost=model._slot_cost,
                                    **policy)
    else:
        plan = batching.plan_sorted(ids, batch_size, model.buckets, **policy)
    out = np.empty((len(ids), model.embedding_dim), np.float32)
    passes = model.placement.schedule(plan, model.tokenizer.pad_token_id)
    show = (len(ids) > AUTO_PROGRESS_TEXTS if show_progress_bar is None
            else show_progress_bar)
    forward = lambda batch, segments: _forward(model, batch, segments, normalize)
    batches = ((p, p.arrays) for p in passes)
    for p, result in batching.pipelined(forward, batches, len(passes), show):
        out[p.texts] = result[p.row, p.slot]
    return out


def token_embeddings_of(model, ids: list[list[int]], batch_size: int) -> list[np.ndarray]:
    """One float32 ``[tokens_i, hidden]`` array per sequence (one per row, as planned by
    :func:`tarka_jax.inference.batching.plan_sorted`), in input order."""
    model.placement.check_local("encode(output_value='token_embeddings')")
    out: list[np.ndarray | None] = [None] * len(ids)
    for p in batching.plan_sorted(ids, batch_size, model.buckets, **_policy(model)):
        with model.placement.context():
            hidden = _tokens_jit(model.params, model.placement.put_batch(p.arrays),
                                 model.config, dtype=model.dtype, attention=model.attention)
        hidden = np.asarray(hidden, np.float32)
        for i, r in zip(p.texts, p.row):
            out[i] = hidden[r, :len(ids[i])].copy()
    return out


def _forward(model, batch: dict[str, np.ndarray], segments: int, normalize: bool):
    rows, width = batch["input_ids"].shape
    model.compiled_shapes.add((rows, width, segments))
    arrays = model.placement.put_batch(
        {k: batch[k] for k in ("input_ids", "segment_ids", "positions")})
    static = dict(config=model.config, dtype=model.dtype, attention=model.attention,
                  segments_per_row=segments)
    if not normalize:  # (absent by default: the exported programs' keys stay as they were)
        static["normalize"] = False
    with model.placement.context():
        programs = program_cache.active()
        program = (programs.program(embed, static, (model.params, arrays))
                   if programs is not None and not model.placement.spans_processes else None)
        out = (program(model.params, arrays) if program is not None
               else _embed_jit(model.params, arrays, **static))
    return model.placement.local_rows(out)  # over processes: this process's rows


def _policy(model) -> dict[str, int]:
    return dict(pad_id=model.tokenizer.pad_token_id, row_multiple=model._row_multiple,
                devices=model._devices, pass_tokens=model.pass_tokens)


__all__ = ["embed_ids", "token_embeddings_of"]

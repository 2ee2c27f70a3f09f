"""Contrastive losses: in-batch multiple-negatives ranking, Matryoshka dims, GradCache.

The same losses as sentence-transformers' ``MultipleNegativesRankingLoss``
(MNRL), ``MatryoshkaLoss`` around it and ``CachedMultipleNegativesRankingLoss``,
written on embeddings so they run inside the one jitted step (the parity test
compares loss and gradients with the real ST classes).

MNRL. Anchors ``q [B, D]``; candidate columns ``docs[0]`` = the positives
``[B, D]`` and ``docs[1:]`` = hard negatives, one per anchor per column. With
``s = scale * cos``, row ``i``'s loss is ``logsumexp(scores_i) - s(q_i, p_i)``,
averaged over rows. The scores of a row come from the ``directions``:

* ``query_to_doc`` (always): ``q_i`` against every candidate of the batch, ``[B, C*B]``;
* ``query_to_query``: ``q_i`` against the other anchors (itself masked);
* ``doc_to_query``: ``p_i`` against every anchor;
* ``doc_to_doc``: ``p_i`` against every candidate except anchor ``i``'s own.

``partition_mode = "joint"`` takes one logsumexp over all of them,
``"per_direction"`` the mean of one per direction. The symmetric loss
(ST's ``MultipleNegativesSymmetricRankingLoss``) is
``directions = ("query_to_doc", "doc_to_query")`` with ``"per_direction"``.

Global batch. Inside ``jax.jit`` the batch is one global array however it is
split over the mesh (data and fsdp axes), so every anchor sees every candidate of
every device: the "gather across devices" of ST is what this loss always does.

Matryoshka. ``sum_m weight_m * MNRL(first m coordinates, re-normalised)``, as
ST's ``MatryoshkaLoss`` (a sum, weights default 1).

Cached (GradCache, Gao et al. 2021). With ``mini_batch_size`` set, the step
embeds the batch mini-batch by mini-batch without gradients, takes the loss and
its gradient with respect to the embeddings on the whole batch, then runs one
forward + VJP per mini-batch with that cotangent and sums the parameter
gradients. Activation memory is one mini-batch's, whatever the batch size, for
one extra forward pass; loss and gradients equal the uncached ones (tested).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from tarka_jax.errors import TarkaError
from tarka_jax.nn.numerics import l2_normalize

Array = jax.Array

DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")


class ContrastiveLossError(TarkaError):
    """A contrastive-loss setting that cannot work."""


@dataclasses.dataclass(frozen=True)
class ContrastiveLossConfig:
    """The ``[loss]`` table of a fine-tuning run.

    Attributes:
      scale: multiplies the cosine similarities (1 / temperature); ST's default 20.
      directions: score sets of each row (see the module docstring); must
        include ``"query_to_doc"``.
      partition_mode: ``"joint"`` or ``"per_direction"``.
      matryoshka_dims: train these leading-coordinate widths too; empty = full dim only.
      matryoshka_weights: one weight per dim (default 1 each).
      mini_batch_size: > 0 = the cached (GradCache) loss with mini-batches of this
        many rows (must divide the batch); 0 = embed the whole batch with gradients.
    """

    scale: float = 20.0
    directions: tuple[str, ...] = ("query_to_doc",)
    partition_mode: str = "joint"
    matryoshka_dims: tuple[int, ...] = ()
    matryoshka_weights: tuple[float, ...] = ()
    mini_batch_size: int = 0

    def __post_init__(self):
        if not self.scale > 0:
            raise ContrastiveLossError(f"loss.scale must be > 0, got {self.scale}")
        bad = sorted(set(self.directions) - set(DIRECTIONS))
        if bad or "query_to_doc" not in self.directions:
            raise ContrastiveLossError(f"loss.directions must include 'query_to_doc' and "
                                       f"take only {list(DIRECTIONS)}; got "
                                       f"{list(self.directions)}")
        if len(set(self.directions)) != len(self.directions):
            raise ContrastiveLossError(f"loss.directions has duplicates: {list(self.directions)}")
        if self.partition_mode not in ("joint", "per_direction"):
            raise ContrastiveLossError(f"loss.partition_mode must be 'joint' or "
                                       f"'per_direction', got {self.partition_mode!r}")
        if self.partition_mode == "per_direction" and (
                {"query_to_query", "doc_to_doc"} & set(self.directions)):
            raise ContrastiveLossError("loss.partition_mode = 'per_direction' needs every "
                                       "direction to contain the positive pair: "
                                       "query_to_query and doc_to_doc do not (use 'joint')")
        if any(m <= 0 for m in self.matryoshka_dims):
            raise ContrastiveLossError(f"loss.matryoshka_dims must be positive, got "
                                       f"{list(self.matryoshka_dims)}")
        if len(set(self.matryoshka_dims)) != len(self.matryoshka_dims):
            raise ContrastiveLossError(f"loss.matryoshka_dims has duplicates: "
                                       f"{list(self.matryoshka_dims)}")
        if self.matryoshka_weights and len(self.matryoshka_weights) != len(self.matryoshka_dims):
            raise ContrastiveLossError("loss.matryoshka_weights needs one weight per "
                                       "loss.matryoshka_dims entry")
        if self.mini_batch_size < 0:
            raise ContrastiveLossError(f"loss.mini_batch_size must be >= 0, got "
                                       f"{self.mini_batch_size}")

    def dims_and_weights(self, dim: int) -> list[tuple[int, float]]:
        """``(m, weight)`` pairs, widest first; the full ``dim`` with weight 1 by default."""
        if not self.matryoshka_dims:
            return [(dim, 1.0)]
        if max(self.matryoshka_dims) > dim:
            raise ContrastiveLossError(f"loss.matryoshka_dims {list(self.matryoshka_dims)} "
                                       f"exceed the model's embedding dim {dim}")
        weights = self.matryoshka_weights or (1.0,) * len(self.matryoshka_dims)
        return sorted(zip(self.matryoshka_dims, map(float, weights)), reverse=True)


def cos_sim(a: Array, b: Array) -> Array:
    """``[N, D] x [M, D] -> [N, M]`` cosine similarities (float32, exact matmul)."""
    return jnp.matmul(l2_normalize(a), l2_normalize(b).T, precision=jax.lax.Precision.HIGHEST)


def mnrl(anchors: Array, docs: Sequence[Array], *, scale: float = 20.0,
         directions: Sequence[str] = ("query_to_doc",),
         partition_mode: str = "joint") -> Array:
    """Multiple-negatives ranking loss of one batch (scalar float32).

    Args:
      anchors: ``[B, D]``.
      docs: ``C >= 1`` arrays ``[B, D]``: positives first, then hard negatives.
      scale, directions, partition_mode: see :class:`ContrastiveLossConfig`.
    """
    q = anchors.astype(jnp.float32)
    docs = [d.astype(jnp.float32) for d in docs]
    b, c = q.shape[0], len(docs)
    docs_all, pos = jnp.concatenate(docs, axis=0), docs[0]  # [C*B, D], [B, D]
    eye = jnp.eye(b, dtype=bool)
    own = jnp.tile(eye, (1, c))  # [B, C*B]: anchor i's own candidates (i, B + i, ...)
    sims = {"query_to_doc": cos_sim(q, docs_all)}
    if "query_to_query" in directions:
        sims["query_to_query"] = jnp.where(eye, -jnp.inf, cos_sim(q, q))
    if "doc_to_query" in directions:
        sims["doc_to_query"] = cos_sim(pos, q)
    if "doc_to_doc" in directions:
        sims["doc_to_doc"] = jnp.where(own, -jnp.inf, cos_sim(pos, docs_all))
    scores = {k: scale * v for k, v in sims.items()}
    positive = jnp.diagonal(scores["query_to_doc"])  # [B]
    if partition_mode == "joint":
        log_z = jax.nn.logsumexp(jnp.concatenate(list(scores.values()), axis=1), axis=1)
    else:
        log_z = sum(jax.nn.logsumexp(s, axis=1) for s in scores.values()) / len(scores)
    return jnp.mean(log_z - positive)


def contrastive_loss(columns: Sequence[Array], cfg: ContrastiveLossConfig) -> Array:
    """The configured loss of embedded columns ``[anchor, positive, negative...]``, each ``[B, D]``.

    Matryoshka dims are summed with their weights (ST's ``MatryoshkaLoss``).
    """
    if len(columns) < 2:
        raise ContrastiveLossError(f"need anchors and positives, got {len(columns)} column(s)")
    total = jnp.float32(0.0)
    for m, w in cfg.dims_and_weights(columns[0].shape[-1]):
        cut = [l2_normalize(x[:, :m].astype(jnp.float32)) for x in columns]
        total = total + w * mnrl(cut[0], cut[1:], scale=cfg.scale, directions=cfg.directions,
                                 partition_mode=cfg.partition_mode)
    return total


# ---- loss and parameter gradients, direct or cached ------------------------------------------

EmbedFn = Callable[..., Array]  # (params, tokens {input_ids, segment_ids, positions}) -> [b, D]


def split_rows(x: Array, parts: int, constrain: Callable[[Array], Array] | None = None) -> Array:
    """``[B, ...] -> [parts, B / parts, ...]``; part ``a`` = rows ``a, a + parts, ...``.

    Strided, so a batch split over devices in contiguous blocks keeps every row
    on its device (no resharding). ``constrain`` pins the result's sharding.
    """
    x = x.reshape(x.shape[0] // parts, parts, *x.shape[1:]).swapaxes(0, 1)
    return constrain(x) if constrain is not None else x


def merge_rows(x: Array) -> Array:
    """Inverse of :func:`split_rows`: ``[parts, B / parts, ...] -> [B, ...]`` in row order."""
    return x.swapaxes(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def loss_and_grads(embed_fn: EmbedFn, params, columns: Sequence[dict],
                   cfg: ContrastiveLossConfig,
                   constrain: Callable[[Array], Array] | None = None):
    """``(loss, grads)`` for token columns ``[anchor, positive, negative...]`` (each ``[B, T_c]``).

    With ``cfg.mini_batch_size`` this is GradCache (module docstring);
    ``constrain`` (optional) pins the sharding of the ``[parts, rows, ...]``
    mini-batch stacks.
    """
    columns = list(columns)
    batch = columns[0]["input_ids"].shape[0]
    mini = cfg.mini_batch_size
    if not mini or mini >= batch:
        def total(p):
            return contrastive_loss([embed_fn(p, c) for c in columns], cfg)

        return jax.value_and_grad(total)(params)
    if batch % mini:
        raise ContrastiveLossError(f"loss.mini_batch_size={mini} must divide the batch of "
                                   f"{batch}")
    parts = batch // mini
    stacks = [jax.tree.map(lambda x: split_rows(x, parts, constrain), c) for c in columns]

    # 1. Embeddings of every mini-batch, no gradient kept: [parts, mini, D] per column.
    reps = [jax.lax.map(lambda mb: jax.lax.stop_gradient(embed_fn(params, mb)), s)
            for s in stacks]
    # 2. Loss and its gradient w.r.t. the embeddings, on the whole batch.
    loss, rep_grads = jax.value_and_grad(
        lambda rs: contrastive_loss([merge_rows(r) for r in rs], cfg))(reps)

    # 3. Per mini-batch: recompute the forward and pull that cotangent back to params.
    def backward(acc, xs):
        mbs, cots = xs
        for mb, cot in zip(mbs, cots):
            _, vjp = jax.vjp(lambda p, mb=mb: embed_fn(p, mb), params)
            (g,) = vjp(cot)
            acc = jax.tree.map(jnp.add, acc, g)
        return acc, None

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, _ = jax.lax.scan(backward, zeros, (stacks, rep_grads))
    return loss, grads

"""Retrieval and STS scores for held-out data during training (numpy; no torch, no mteb).

What the distillation and fine-tuning loops log next to ``eval_cosine`` /
``eval_top1`` (``tarka_jax.recipe.evaluate``), computed the way MTEB and
``tarka_jax.testing.demo`` compute them:

* :func:`retrieval_scores`: ``ndcg@10`` (linear gains, as trec_eval / mteb),
  ``mrr@10``, ``mrr`` (full, :func:`tarka_jax.testing.demo.retrieval_metrics`' rule) and
  ``recall@k`` from query and document embeddings and a relevance matrix.
  **Ties count against the model**: documents that score exactly as high as a
  relevant one are ranked before it, so a constant model gets the minimum, never
  a lucky draw (trec_eval breaks ties by document id instead; on tie-free scores
  the two agree, tested against ``pytrec_eval``).
* :func:`sts_spearman`: Spearman correlation between cosine similarities of
  pairs and gold scores (mteb's STS main score, ``cosine_spearman``).

:func:`evaluate_retrieval` / :func:`evaluate_sts` run a model with
``encode_query`` / ``encode_document`` / ``encode`` (an :class:`~tarka_jax.Embedder`
or a ``SentenceTransformer``) and prefix every key, e.g. ``eval_ndcg@10``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tarka_jax.errors import UsageError
from tarka_jax.nn.numerics import l2_normalize


def _unit(x) -> np.ndarray:
    return l2_normalize(np.asarray(x, np.float64))  # scores in float64, as MTEB's numpy path


def _relevance(relevance, n_queries: int, n_docs: int) -> np.ndarray:
    """float ``[Q, N]`` gains; None = query ``i``'s only answer is document ``i``."""
    if relevance is None:
        if n_queries != n_docs:
            raise UsageError(f"without a relevance matrix query i pairs with document i: "
                             f"{n_queries} queries vs {n_docs} documents")
        return np.eye(n_queries)
    rel = np.asarray(relevance, np.float64)
    if rel.shape != (n_queries, n_docs):
        raise UsageError(f"relevance must be [queries, documents] = {(n_queries, n_docs)}, "
                         f"got {rel.shape}")
    if np.any(rel < 0):
        raise UsageError("relevance gains must be >= 0")
    return rel


def ranking(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """int ``[Q, N]``: document order per query, best first, ties against the model.

    Among equal scores non-relevant documents come first (then lower gains), so
    ties never help.
    """
    # lexsort: last key is primary. -scores ascending = best first; gain ascending in ties.
    return np.stack([np.lexsort((relevance[q], -scores[q])) for q in range(scores.shape[0])])


def retrieval_scores(queries: np.ndarray, documents: np.ndarray, relevance=None, *,
                     k: int = 10, recall_at: Sequence[int] = (1, 5, 10),
                     scores: np.ndarray | None = None) -> dict[str, float]:
    """nDCG@k, MRR@k, full MRR and recall@k of cosine retrieval.

    Args:
      queries: float ``[Q, D]`` query embeddings.
      documents: float ``[N, D]`` document embeddings (every one a candidate).
      relevance: ``[Q, N]`` gains (0 = not relevant; graded gains count in nDCG,
        any gain > 0 counts as relevant elsewhere); None = query i <-> document i.
      k: cut-off of nDCG and MRR (10 as in MTEB).
      recall_at: cut-offs of recall (fraction of a query's relevant documents in
        its top k, averaged over queries).
      scores: precomputed ``[Q, N]`` similarities instead of cosine.

    Queries without a relevant document are skipped (as trec_eval does).
    """
    if scores is None:
        scores = _unit(queries) @ _unit(documents).T  # [Q, N]
    scores = np.asarray(scores, np.float64)
    rel = _relevance(relevance, *scores.shape)
    keep = rel.max(axis=1) > 0
    if not keep.any():
        raise UsageError("no query has a relevant document")
    scores, rel = scores[keep], rel[keep]
    order = ranking(scores, rel)
    gains = np.take_along_axis(rel, order, axis=1)  # [Q, N] in ranked order
    hit = gains > 0
    discount = 1.0 / np.log2(np.arange(2, scores.shape[1] + 2))  # [N]
    dcg = (gains[:, :k] * discount[:k]).sum(1)
    ideal = (-np.sort(-rel, axis=1)[:, :k] * discount[:k]).sum(1)
    first = np.argmax(hit, axis=1) + 1  # rank of the first relevant document
    out = {f"ndcg@{k}": float(np.mean(dcg / ideal)),
           f"mrr@{k}": float(np.mean(np.where(first <= k, 1.0 / first, 0.0))),
           "mrr": float(np.mean(1.0 / first))}
    n_rel = hit.sum(1)
    for r in recall_at:
        out[f"recall@{r}"] = float(np.mean(hit[:, :r].sum(1) / n_rel))
    out["queries"] = int(keep.sum())
    return out


def sts_spearman(embeddings1: np.ndarray, embeddings2: np.ndarray,
                 gold: Sequence[float]) -> dict[str, float]:
    """``{"spearman", "pearson", "pairs"}`` of row-wise cosine vs gold scores."""
    from scipy.stats import pearsonr, spearmanr

    a, b = _unit(embeddings1), _unit(embeddings2)
    gold = np.asarray(gold, np.float64)
    if a.shape != b.shape or a.shape[0] != gold.shape[0]:
        raise UsageError(f"STS needs equal rows: {a.shape}, {b.shape}, {gold.shape[0]} gold scores")
    if a.shape[0] < 2:
        raise UsageError("STS needs at least 2 pairs")
    cos = np.sum(a * b, axis=-1)
    return {"spearman": float(spearmanr(cos, gold).statistic),
            "pearson": float(pearsonr(cos, gold).statistic), "pairs": int(a.shape[0])}


# ---- with a model ---------------------------------------------------------------------------


def evaluate_retrieval(model, queries: Sequence[str], documents: Sequence[str], relevance=None,
                       *, prefix: str = "eval_", batch_size: int = 32, **kwargs) -> dict:
    """:func:`retrieval_scores` of a model (``encode_query`` / ``encode_document``)."""
    q = model.encode_query(list(queries), batch_size=batch_size)
    d = model.encode_document(list(documents), batch_size=batch_size)
    return {prefix + key: v for key, v in retrieval_scores(q, d, relevance, **kwargs).items()}


def evaluate_sts(model, sentences1: Sequence[str], sentences2: Sequence[str],
                 gold: Sequence[float], *, prompt_name: str | None = "STS",
                 prefix: str = "eval_sts_", batch_size: int = 32) -> dict:
    """:func:`sts_spearman` of a model; the "STS" prompt when the model has one (as mteb)."""
    name = prompt_name if prompt_name in (getattr(model, "prompts", None) or {}) else None
    a = model.encode(list(sentences1), prompt_name=name, batch_size=batch_size)
    b = model.encode(list(sentences2), prompt_name=name, batch_size=batch_size)
    return {prefix + key: v for key, v in sts_spearman(a, b, gold).items()}


def evaluate_pairs(model, records: Sequence[dict], *, batch_size: int = 32) -> dict:
    """Both evaluators on held-out records ``{"query", "document"[, "score"]}``.

    Retrieval: query ``i``'s answer is document ``i`` among all documents (keys
    ``eval_ndcg@10``, ``eval_mrr@10``, ``eval_mrr``, ``eval_recall@k``). STS, when
    every record has a ``score``: Spearman of cos(query, document) vs the scores
    (``eval_sts_spearman``). What ``tarka-jax evaluate --pairs FILE.jsonl`` reports.
    """
    records = list(records)
    missing = [i for i, r in enumerate(records) if "query" not in r or "document" not in r]
    if missing:
        raise UsageError(f"records {missing[:5]} lack a \"query\" or \"document\" field")
    queries, docs = [r["query"] for r in records], [r["document"] for r in records]
    out = evaluate_retrieval(model, queries, docs, batch_size=batch_size)
    if records and all("score" in r for r in records):
        out.update(evaluate_sts(model, queries, docs, [float(r["score"]) for r in records],
                                batch_size=batch_size))
    return out


__all__ = ["evaluate_pairs", "evaluate_retrieval", "evaluate_sts", "ranking", "retrieval_scores",
           "sts_spearman"]

"""Training-time retrieval / STS evaluators vs trec_eval (pytrec_eval, mteb's scorer) and demo."""

from __future__ import annotations

import numpy as np
import pytest

from tarka_jax.evaluation.scores import evaluate_retrieval, retrieval_scores, sts_spearman
from tarka_jax.nn.numerics import l2_normalize
from tarka_jax.testing import demo


def _random_case(seed: int, q: int = 7, n: int = 23, d: int = 5):
    rng = np.random.default_rng(seed)
    queries, docs = rng.standard_normal((q, d)), rng.standard_normal((n, d))
    rel = np.zeros((q, n))
    for i in range(q):  # 1-3 relevant documents with graded gains 1 or 2
        rel[i, rng.choice(n, size=rng.integers(1, 4), replace=False)] = rng.integers(1, 3)
    return queries, docs, rel


def _trec(scores, rel, measures, top=None):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {f"q{i}": {f"d{j}": int(g) for j, g in enumerate(row) if g > 0}
             for i, row in enumerate(rel)}
    run = {}
    for i, row in enumerate(scores):
        keep = np.argsort(-row)[:top] if top else range(len(row))
        run[f"q{i}"] = {f"d{j}": float(row[j]) for j in keep}
    out = pytrec_eval.RelevanceEvaluator(qrels, set(measures)).evaluate(run)
    return {m: np.mean([v[m] for v in out.values()]) for m in next(iter(out.values()))}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_scores_match_trec_eval_without_ties(seed):
    queries, docs, rel = _random_case(seed)
    ours = retrieval_scores(queries, docs, rel, recall_at=(5, 10))
    scores = l2_normalize(queries) @ l2_normalize(docs).T
    ref = _trec(scores, rel, {"ndcg_cut.10", "recip_rank", "recall.5,10"})
    assert ours["ndcg@10"] == pytest.approx(ref["ndcg_cut_10"], abs=1e-6)
    assert ours["mrr"] == pytest.approx(ref["recip_rank"], abs=1e-6)
    assert ours["recall@5"] == pytest.approx(ref["recall_5"], abs=1e-6)
    assert ours["recall@10"] == pytest.approx(ref["recall_10"], abs=1e-6)
    # MRR@10 = trec's reciprocal rank of a run cut to each query's top 10.
    top10 = _trec(scores, rel, {"recip_rank"}, top=10)
    assert ours["mrr@10"] == pytest.approx(top10["recip_rank"], abs=1e-6)
    assert ours["mrr@10"] <= ours["mrr"]


def _pessimistic_ranks(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Rank of document i for query i, ties counted against it, by brute force (float64)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    scores = q.astype(np.float64) @ d.astype(np.float64).T
    return np.array([sum(scores[i, j] >= scores[i, i] for j in range(len(d)))
                     for i in range(len(q))])


def test_retrieval_full_mrr_counts_ties_against_the_model():
    rng = np.random.default_rng(3)
    q = rng.standard_normal((9, 4)).astype(np.float32)
    d = q + 0.5 * rng.standard_normal((9, 4)).astype(np.float32)
    d[5] = d[4]  # a duplicated document: a tie for query 4 and 5
    for docs in (d, np.ones_like(d)):  # and a constant model: every document tied
        ours, ranks = retrieval_scores(q, docs), _pessimistic_ranks(q, docs)
        assert ours["mrr"] == pytest.approx(np.mean(1.0 / ranks), abs=1e-12)
        assert ours["recall@1"] == pytest.approx(np.mean(ranks == 1), abs=1e-12)
        assert demo.retrieval_metrics(q, docs)["mrr"] == ours["mrr"]


def test_retrieval_ties_count_against_the_model():
    n = 12
    const = retrieval_scores(np.ones((n, 3)), np.ones((n, 3)))
    assert const["mrr"] == pytest.approx(1 / n)
    assert const["mrr@10"] == 0.0 and const["recall@10"] == 0.0 and const["ndcg@10"] == 0.0
    perfect = retrieval_scores(np.eye(n), np.eye(n))
    assert perfect["mrr"] == perfect["ndcg@10"] == perfect["recall@1"] == 1.0


def test_sts_spearman_is_the_rank_correlation():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((30, 6)), rng.standard_normal((30, 6))
    gold = rng.uniform(0, 5, 30)
    cos = np.sum(l2_normalize(a) * l2_normalize(b), axis=1)
    ranks = [np.argsort(np.argsort(x)).astype(float) for x in (cos, gold)]  # tie-free data
    expected = np.corrcoef(*ranks)[0, 1]
    assert sts_spearman(a, b, gold)["spearman"] == pytest.approx(expected, abs=1e-12)
    assert sts_spearman(a, a, gold)["pairs"] == 30


def test_evaluators_reject_bad_shapes():
    with pytest.raises(ValueError, match="query i pairs with document i"):
        retrieval_scores(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"relevance must be \[queries, documents\]"):
        retrieval_scores(np.ones((2, 3)), np.ones((3, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="no query has a relevant document"):
        retrieval_scores(np.ones((2, 3)), np.ones((3, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="equal rows"):
        sts_spearman(np.ones((3, 2)), np.ones((4, 2)), [1, 2, 3])


def test_evaluate_retrieval_on_an_embedder(jax_only_model):
    from tarka_jax import Embedder

    model = Embedder.from_pretrained(jax_only_model)
    summaries = ["the red planet", "a gas giant with rings", "light from the sun"]
    bodies = ["mars is the red planet", "saturn is a gas giant", "the sun is a star"]
    out = evaluate_retrieval(model, summaries, bodies)
    q, d = model.encode_query(summaries), model.encode_document(bodies)
    assert out["eval_mrr"] == pytest.approx(demo.retrieval_metrics(q, d)["mrr"], abs=1e-12)
    assert set(out) >= {"eval_ndcg@10", "eval_mrr@10", "eval_recall@1", "eval_queries"}


def test_evaluate_pairs_reports_retrieval_and_sts(jax_only_model):
    from tarka_jax import Embedder
    from tarka_jax.evaluation.scores import evaluate_pairs, evaluate_sts

    model = Embedder.from_pretrained(jax_only_model)
    records = [{"query": "the red planet", "document": "mars is the red planet", "score": 5},
               {"query": "a gas giant", "document": "saturn is a gas giant", "score": 4},
               {"query": "light", "document": "the moon orbits", "score": 1}]
    out = evaluate_pairs(model, records)
    assert {"eval_ndcg@10", "eval_mrr", "eval_sts_spearman"} <= set(out)
    q, d, gold = ([r[k] for r in records] for k in ("query", "document", "score"))
    # STS uses the model's "STS" prompt (as mteb does for an STS task).
    a = model.encode(q, prompt_name="STS")
    b = model.encode(d, prompt_name="STS")
    assert out["eval_sts_spearman"] == sts_spearman(a, b, gold)["spearman"]
    assert evaluate_sts(model, q, d, gold) == {k: v for k, v in out.items() if "sts" in k}
    no_scores = [{"query": r["query"], "document": r["document"]} for r in records]
    assert "eval_sts_spearman" not in evaluate_pairs(model, no_scores)
    with pytest.raises(ValueError, match="lack a"):
        evaluate_pairs(model, [{"query": "x"}])

"""The offline demo: committed corpus, retrieval metrics, and the shipped builtin:demo-mini."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tarka_jax import Embedder
from tarka_jax.convert.sources import BUILTIN_DIR, builtin_models, resolve_folder
from tarka_jax.testing import demo


@pytest.fixture(scope="module")
def corpus():
    return demo.load_corpus()


@pytest.fixture(scope="module")
def demo_mini():
    return Embedder.from_pretrained("builtin:demo-mini")


def test_corpus_matches_manifest_and_split_is_clean(corpus):
    m = corpus.manifest
    held, train = corpus.split("heldout"), corpus.split("train")
    assert len(held) == m["pairs_heldout"] and len(held) + len(train) == m["pairs"]
    assert len(corpus.sentences) == m["train_sentences"] > 10_000
    assert len({p["summary"] for p in corpus.pairs}) == len(corpus.pairs)  # one answer each
    assert len({p["body"] for p in corpus.pairs}) == len(corpus.pairs)
    train_texts = set(corpus.training_texts())
    assert not train_texts & set(corpus.heldout_texts())
    # No held-out body leaks in as a training sentence either.
    assert not any(p["body"] in train_texts for p in held)


def test_corpus_refuses_a_changed_file(tmp_path):
    src = demo.corpus_folder()
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f:
            data = f.read()
        if name == "sentences.txt.gz":
            data = data[:-1] + bytes([data[-1] ^ 1])
        (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match="MANIFEST"):
        demo.load_corpus(str(tmp_path))


def test_retrieval_metrics_perfect_constant_and_ties():
    eye = np.eye(5, dtype=np.float32)
    assert demo.retrieval_metrics(eye, eye) == {"recall@1": 1.0, "mrr": 1.0, "n": 5}
    const = np.ones((4, 3), np.float32)
    m = demo.retrieval_metrics(const, const)  # every score ties: the true doc ranks last
    assert m["recall@1"] == 0.0 and m["mrr"] == pytest.approx(0.25)
    q = np.array([[1, 0], [0, 1]], np.float32)
    d = np.array([[0, 1], [1, 0]], np.float32)  # each query's answer ranks second
    assert demo.retrieval_metrics(q, d)["mrr"] == pytest.approx(0.5)


def test_builtin_name_resolves_inside_the_package():
    assert "demo-mini" in builtin_models()
    folder = resolve_folder("builtin:demo-mini")
    assert os.path.samefile(folder, os.path.join(BUILTIN_DIR, "demo-mini"))
    with pytest.raises(FileNotFoundError, match="builtin:demo-mini"):
        resolve_folder("builtin:no-such-model")


def test_demo_mini_is_small():
    folder = resolve_folder("builtin:demo-mini")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    assert size <= 16 * 2**20


def test_demo_mini_ranks_heldout_pairs(demo_mini, corpus):
    pairs = demo.sample_pairs(corpus, 24, seed=7)
    trained = demo.evaluate_retrieval(demo_mini, pairs)
    untrained = demo.evaluate_retrieval(demo.untrained_like("builtin:demo-mini"), pairs)
    assert demo_mini.embedding_dim == 384
    # 24 candidates: chance MRR ~0.16. The shipped model scores recall@1 0.58, MRR 0.73 here
    # (the whole held-out table is in BENCHMARKS.md); a rebuild may move these a little.
    assert trained["recall@1"] >= 0.5, trained
    assert trained["mrr"] >= 0.6, trained
    assert trained["mrr"] >= untrained["mrr"] + 0.3, (trained, untrained)


def test_cli_search_on_demo_mini_offline(tmp_path, capsys, corpus):
    from tarka_jax.cli import main

    pairs = demo.sample_pairs(corpus, 6, seed=11)
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(p["body"] for p in pairs) + "\n", encoding="utf-8")
    query = pairs[2]["summary"]
    assert main(["search", "-m", "builtin:demo-mini", "--docs", str(docs), "-q", query,
                 "-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"query: {query}"
    assert out[1].rstrip().endswith("[line 3]"), out

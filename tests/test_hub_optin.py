"""Opt-in: the real Tarka-AIR/Tarka-Embedding-150M-V1 and google/embeddinggemma-300m from the hub.

Skipped unless TARKA_JAX_HUB_TESTS=1 and the hub is reachable (CI has no hub).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = [pytest.mark.torch, pytest.mark.hub]

MODELS = ("Tarka-AIR/Tarka-Embedding-150M-V1", "google/embeddinggemma-300m")
QUERY = "Which planet is known as the Red Planet?"
DOCUMENTS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
]


def _hub_or_skip(model_id):
    if os.environ.get("TARKA_JAX_HUB_TESTS") != "1":
        pytest.skip("set TARKA_JAX_HUB_TESTS=1 to run against the real hub checkpoints")
    os.environ.pop("HF_HUB_OFFLINE", None)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model_id)
    except Exception as e:  # no network, no auth for a gated model
        pytest.skip(f"hub not reachable for {model_id}: {e}")


@pytest.mark.parametrize("model_id", MODELS)
def test_real_checkpoint_matches_sentence_transformers(model_id):
    folder = _hub_or_skip(model_id)
    from sentence_transformers import SentenceTransformer

    from tarka_jax.inference.embedder import Embedder

    st = SentenceTransformer(folder, device="cpu")
    ours = Embedder.from_pretrained(folder)
    texts = DOCUMENTS + [" ".join(DOCUMENTS * 40)]  # one input far past the 256 window radius
    assert np.abs(ours.encode_document(texts) - st.encode_document(texts)).max() <= 1e-5
    assert np.abs(ours.encode_query(QUERY) - st.encode_query(QUERY)).max() <= 1e-5
    ids = st[0].preprocess(texts)["input_ids"].numpy()
    for row, ours_ids in zip(ids, ours.tokenizer.encode(texts, prompt=None)):
        assert list(row[: len(ours_ids)]) == list(ours_ids)

"""One full Tarka-shaped model (vocab 64,400, 24 layers, hidden 768, MQA 3:1, head_dim 256,
window 512) against sentence-transformers, with an input longer than 600 tokens, so
every sliding layer's (256, 256) window is exceeded and padded rows go fully masked."""

from __future__ import annotations

import numpy as np
import pytest

from tarka_jax.testing.reference import TinySpec, build_reference_model, long_text

pytestmark = [pytest.mark.torch, pytest.mark.slow]

TARKA_LAYERS = tuple("sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(24))


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    folder = str(tmp_path_factory.mktemp("tarka_full"))
    spec = TinySpec(vocab_size=64_400, hidden_size=768, intermediate_size=1152, num_layers=24,
                    num_heads=3, num_kv_heads=1, head_dim=256, query_pre_attn_scalar=256,
                    sliding_window=512, layer_types=TARKA_LAYERS, dense=(3072, 768),
                    max_seq_length=1024, seed=7)
    build_reference_model(folder, spec)
    return folder, SentenceTransformer(folder, device="cpu")


def test_full_size_encode_document_matches_sentence_transformers(full_size):
    from tarka_jax.inference.embedder import Embedder

    folder, st = full_size
    texts = [long_text(700, 1), "Which planet is known as the Red Planet?", long_text(90, 2)]
    ours = Embedder.from_pretrained(folder)
    assert ours.config.embedding_dim == 768 and ours.config.vocab_size == 64_400
    lengths = [len(x) for x in ours.tokenizer.encode(texts, prompt=ours.prompts["document"])]
    assert lengths[0] > 600
    ref = st.encode_document(texts, batch_size=4)
    got = ours.encode_document(texts, batch_size=4)
    assert np.abs(got - ref).max() <= 1e-5

"""Bounds and small input checks of the Embedder: clear errors, numpy integers accepted alike.

Torch-free (the JAX-written ``jax_only_model``; max_position_embeddings 2048).
"""

from __future__ import annotations

import numpy as np
import pytest

from tarka_jax import Embedder

TEXTS = ["a short text", "another, slightly longer text to embed", "x"]


@pytest.fixture(scope="module")
def model(jax_only_model):
    return Embedder.from_pretrained(jax_only_model)


@pytest.mark.parametrize("bad", [10**6, 0, -1, 3.5, "64", True])
def test_max_seq_length_must_be_an_int_within_the_positions(jax_only_model, model, bad):
    top = model.config.max_position_embeddings
    with pytest.raises(ValueError, match=rf"max_seq_length must be an int in 1\.\.{top}"):
        Embedder.from_pretrained(jax_only_model, max_seq_length=bad)
    with pytest.raises(ValueError, match="max_seq_length must be an int"):
        model.max_seq_length = bad


def test_max_seq_length_numpy_int_and_upper_bound_accepted(jax_only_model, model):
    top = model.config.max_position_embeddings
    a = Embedder.from_pretrained(jax_only_model, max_seq_length=np.int64(16))
    assert a.max_seq_length == 16 and type(a.max_seq_length) is int
    assert Embedder.from_pretrained(jax_only_model, max_seq_length=top).max_seq_length == top
    np.testing.assert_array_equal(a.encode(TEXTS), Embedder.from_pretrained(
        jax_only_model, max_seq_length=16).encode(TEXTS))


def test_numpy_integers_are_accepted_for_every_numeric_argument(model):
    ref = model.encode(TEXTS, batch_size=2, truncate_dim=8)
    got = model.encode(TEXTS, batch_size=np.int64(2), truncate_dim=np.int32(8))
    np.testing.assert_array_equal(got, ref)
    for name, value in (("batch_size", 2.0), ("batch_size", 0), ("batch_size", True),
                        ("truncate_dim", 8.0)):
        with pytest.raises(ValueError, match=name):
            model.encode(TEXTS, **{name: value})


def test_constructor_numeric_arguments(jax_only_model):
    m = Embedder.from_pretrained(jax_only_model, pack_segments=np.int64(4),
                                 buckets_per_octave=np.int64(2))
    assert (m.pack_segments, m.buckets_per_octave) == (4, 2)
    with pytest.raises(ValueError, match="buckets_per_octave"):
        Embedder.from_pretrained(jax_only_model, buckets_per_octave=0)


def test_similarity_refuses_three_dimensional_input(model):
    emb = model.encode(TEXTS)
    with pytest.raises(ValueError, match=r"shape \(1, 3, 24\)"):
        model.similarity(emb[None], emb)


def test_a_run_folder_says_how_to_export_it(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ValueError, match="flax_to_hf.py .* --step N"):
        Embedder.from_pretrained(str(tmp_path))

"""``numerics.l2_normalize``: the values of ``x / max(||x||, eps)`` and finite gradients at 0.

An all-zero pooled vector (an empty packed slot, a fully padded row) must not turn every
parameter's gradient into NaN: ``max(sqrt(s), eps)`` did (0 * sqrt's infinite slope at 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tarka_jax.nn.config import FULL, SLIDING, ModelConfig
from tarka_jax.nn.encoder import embed, init_params
from tarka_jax.nn.numerics import NORM_EPS, l2_normalize


def test_values_match_the_numpy_form_including_tiny_and_zero_rows():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    x[1] = 0.0
    x[2] *= NORM_EPS / 100  # norm below eps: divided by eps, as before
    want = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)
    np.testing.assert_allclose(np.asarray(l2_normalize(jnp.asarray(x))), want, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(l2_normalize(x), want)  # numpy in, numpy out


def test_gradient_is_finite_at_a_zero_vector():
    x = jnp.zeros((2, 4)).at[0].set(jnp.arange(1.0, 5.0))
    grad = jax.grad(lambda v: jnp.sum(l2_normalize(v)[0] * jnp.arange(4.0)))(x)
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_array_equal(np.asarray(grad[1]), 0.0)


def test_model_gradients_finite_with_an_empty_packed_slot():
    config = ModelConfig(vocab_size=53, hidden_size=16, intermediate_size=24, num_layers=2,
                         num_heads=3, num_kv_heads=1, head_dim=8, query_pre_attn_scalar=8,
                         layer_types=(SLIDING, FULL), sliding_window=4)
    params = init_params(config, jax.random.PRNGKey(0))
    # Row 1 holds one text: its second slot (segment 2) is empty -> a zero pooled vector.
    batch = {"input_ids": jnp.asarray([[3, 4, 5, 6, 7, 8], [9, 10, 11, 0, 0, 0]], jnp.int32),
             "segment_ids": jnp.asarray([[1, 1, 1, 2, 2, 2], [1, 1, 1, 0, 0, 0]], jnp.int32),
             "positions": jnp.asarray([[0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 0, 0]], jnp.int32)}

    def loss(p):  # only the real texts' embeddings enter the loss
        # Dense "xla" attention: the NaN came from the pooling, and it compiles fastest.
        emb = embed(p, batch, config, attention="xla", segments_per_row=2)  # [rows, slots, dim]
        return jnp.sum(emb[0, 0] * emb[0, 1]) + jnp.sum(emb[1, 0])

    grads = jax.grad(loss)(params)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        assert np.isfinite(np.asarray(g)).all(), jax.tree_util.keystr(path)

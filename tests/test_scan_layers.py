"""tarka_jax.scan_layers: the scanned encoder equals the unrolled one, layer for layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tarka_jax.config import FULL, SLIDING, ModelConfig
from tarka_jax.model import init_params, token_embeddings
from tarka_jax.scan_layers import _runs, encoder_scanned, layer_period


def _config(layer_types):
    return ModelConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=len(layer_types),
        num_heads=3, num_kv_heads=1, head_dim=16, query_pre_attn_scalar=16,
        layer_types=tuple(layer_types), sliding_window=6)


def test_layer_period():
    assert layer_period(_config([SLIDING] * 5 + [FULL] + [SLIDING] * 5 + [FULL])) == 6
    assert layer_period(_config([SLIDING, SLIDING, FULL])) == 3
    assert layer_period(_config([SLIDING, FULL, FULL])) == 3  # not periodic: one repetition
    assert layer_period(_config([FULL] * 4)) == 1
    assert _runs([SLIDING] * 5 + [FULL]) == [(0, 5), (5, 1)]
    assert _runs([FULL, SLIDING, SLIDING, FULL]) == [(0, 1), (1, 2), (3, 1)]


@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_scanned_encoder_matches_unrolled(dtype):
    config = _config([SLIDING, SLIDING, FULL] * 2)  # period 3 repeated twice: runs of 2 and 1
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.1).astype(np.float32),
                          shapes)
    b, t = 2, 21
    batch = {"input_ids": jnp.asarray(rng.integers(1, 97, (b, t)), jnp.int32),
             "segment_ids": jnp.asarray([[1] * 12 + [2] * 9, [1] * 15 + [0] * 6], jnp.int32),
             "positions": jnp.asarray([list(range(12)) + list(range(9)),
                                       list(range(15)) + [0] * 6], jnp.int32)}
    want = jax.jit(lambda p: token_embeddings(p, batch, config, dtype=dtype))(params)
    got = jax.jit(lambda p: encoder_scanned(p["encoder"], batch["input_ids"],
                                            batch["segment_ids"], batch["positions"], config,
                                            dtype=dtype))(params)
    want, got = np.asarray(want, np.float32), np.asarray(got, np.float32)
    assert got.shape == want.shape == (b, t, 32)
    # bfloat16: the two programs fuse (and so round) differently; 6 layers amplify it.
    tol = 1e-5 if dtype == "float32" else 3e-2
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err <= tol, err

"""``scan_layers=True``: the same embeddings, hidden states and gradients as the layer loop.

Random O(0.1) weights on a tiny config whose layers repeat a (sliding, sliding,
full) period twice, so the scan has two repetitions and two runs per period;
packed rows with padding. Tolerances: embeddings are unit vectors (absolute
bound); hidden states and gradients are compared relative to their norm. The
scanned program rounds differently from the loop (not bit-equal), so the bounds
are >= 5x the largest value measured over three weight seeds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tarka_jax.nn.config import FULL, SLIDING, ModelConfig
from tarka_jax.nn.encoder import embed, init_params, token_embeddings
from tarka_jax.nn.scan_layers import layer_period, layer_runs

LAYERS = [SLIDING, SLIDING, FULL] * 2


def _config(layer_types, **kw):
    return ModelConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=len(layer_types),
        num_heads=3, num_kv_heads=1, head_dim=16, query_pre_attn_scalar=16,
        layer_types=tuple(layer_types), sliding_window=6, **kw)


def _model(layer_types):
    config = _config(layer_types)
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape) * 0.1, jnp.float32),
                          shapes)
    # Two packed texts per row (windows of 6 < the text lengths), padding at the end of row 1.
    batch = {"input_ids": jnp.asarray(rng.integers(1, 97, (2, 21)), jnp.int32),
             "segment_ids": jnp.asarray([[1] * 12 + [2] * 9, [1] * 15 + [2] * 4 + [0] * 2],
                                        jnp.int32),
             "positions": jnp.asarray([list(range(12)) + list(range(9)),
                                       list(range(15)) + list(range(4)) + [0] * 2], jnp.int32)}
    return config, params, batch


@pytest.fixture(scope="module")
def model():
    return _model(LAYERS)


def test_layer_period_and_runs():
    assert layer_period(_config([SLIDING] * 5 + [FULL] + [SLIDING] * 5 + [FULL])) == 6
    assert layer_period(_config([SLIDING, SLIDING, FULL])) == 3
    assert layer_period(_config([SLIDING, FULL, FULL])) == 3  # not periodic: one repetition
    assert layer_period(_config([FULL] * 4)) == 1
    assert layer_runs(_config([SLIDING] * 5 + [FULL])) == [(0, 5), (5, 1)]
    assert layer_runs(_config([FULL, SLIDING, SLIDING, FULL])) == [(0, 1), (1, 2), (3, 1)]


def _top_level_dots(fn, *args) -> int:
    return sum(e.primitive.name == "dot_general" for e in jax.make_jaxpr(fn)(*args).eqns)


def test_scan_layers_takes_effect(model):
    """The flag really changes the program: no layer matmul is left outside the scan."""
    config, params, batch = model
    unrolled = _top_level_dots(lambda p: embed(p, batch, config), params)
    scanned = _top_level_dots(lambda p: embed(p, batch, config, scan_layers=True), params)
    assert unrolled >= 7 * config.num_layers  # q, k, v, o, gate, up, down per layer
    assert scanned <= len(config.dense) + 1  # the Dense head (+ the packed pooling einsum)


def test_scanned_forward_matches_unrolled(model):
    config, params, batch = model

    def run(scan):  # one program per side: pooled embeddings and the hidden states
        return jax.jit(lambda p: (embed(p, batch, config, segments_per_row=2, scan_layers=scan),
                                  token_embeddings(p, batch, config, scan_layers=scan)))(params)

    (want, want_hidden), (got, got_hidden) = run(False), run(True)
    assert got.shape == want.shape == (2, 2, 32)
    # Unit vectors: measured 2.2-3.9e-7 over three weight seeds.
    assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 2e-6
    assert got_hidden.shape == want_hidden.shape == (2, 21, 32)
    rel = np.linalg.norm(got_hidden - want_hidden) / np.linalg.norm(want_hidden)
    assert rel <= 5e-6, rel  # measured 6.1-7.9e-7: the two programs fuse (and round) differently


@pytest.mark.slow
def test_scanned_bfloat16_close_to_unrolled(model):
    config, params, batch = model
    want, got = [np.asarray(token_embeddings(params, batch, config, dtype="bfloat16",
                                             scan_layers=s), np.float32) for s in (False, True)]
    # The two programs fuse (and so round) differently; 6 bf16 layers amplify it.
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 3e-2


@pytest.mark.parametrize("remat", [pytest.param(False, marks=pytest.mark.slow), True])
def test_scanned_gradients_match_unrolled(remat):
    # Two periods of (sliding, full): the smallest stack with a repeat and two runs
    # (gradient programs of the 6-layer model take ~4x longer to compile).
    config, params, batch = _model([SLIDING, FULL] * 2)

    def grads(scan):
        def loss(p):  # both packed slots of both rows are real texts: no empty-slot norm
            return jnp.sum(embed(p, batch, config, segments_per_row=2, remat=remat,
                                 scan_layers=scan)[..., :5] ** 2)
        return jax.jit(jax.grad(loss))(params)

    want, got = grads(False), grads(True)
    assert jax.tree.structure(got) == jax.tree.structure(want)  # still layers_{i}
    w, g = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)]) for t in (want, got))
    assert np.all(np.isfinite(g))
    err = np.linalg.norm(g - w) / np.linalg.norm(w)
    assert err <= 1e-5, err  # measured 0.8-1.3e-6 (remat), 1.1e-6 (no remat)

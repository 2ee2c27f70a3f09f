"""Attention implementations vs an independent float64 reference: output and all three gradients.

One shared suite runs every implementation ("xla", "pallas_triton" and
"splash_tpu"; the Pallas ones in interpret mode on CPU, compiled on their own
accelerator) over the same cases:
full and windowed (symmetric, asymmetric, one-sided, wider than the sequence),
MQA 3:1, GQA 4:2 and MHA, head_dim 16-256, lengths that are not block
multiples, packed segments, rows of all padding, float32 and bfloat16.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import kernel_suite as suite  # tests/kernel_suite.py (tests/ is on sys.path: conftest.py)
import numpy as np
import pytest

from tarka_jax.kernels import attention
from tarka_jax.kernels.pallas_triton import attention_pallas_triton, key_ranges

# jax >= 0.11 warns that Pallas Triton is deprecated; it still ships and is what we test.
pytestmark = pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated")
ON_CPU = jax.default_backend() == "cpu"
# pallas_triton refuses float32 on a GPU (spills; docs/kernels.md): those checks are CPU-only.
f32_pallas = pytest.mark.skipif(not ON_CPU, reason="pallas_triton refuses float32 on a GPU")
IMPLEMENTATIONS = ("xla", "pallas_triton", "splash_tpu")
# splash_tpu runs on a TPU or in interpret mode (CPU); on a GPU it is not a choice.
SPLASH_RUNS = jax.default_backend() in ("cpu", "tpu")
TOLERANCE = suite.TOLERANCE
reference, Case, segment_ids_for = suite.reference, suite.Case, suite.segment_ids_for
_inputs, _rel_l2 = suite.inputs, suite.rel_l2


CASES = [
    Case("mqa_full_padded", 3, 45, 3, 1, 64),
    Case("mqa_window_sym_packed", 2, 77, 3, 1, 64, window=(8, 8), segments="packed"),
    Case("gqa_window_asym_packed", 2, 50, 4, 2, 128, window=(3, 12), segments="packed", scale=0.3),
    Case("mqa_d256_window_left_only", 1, 100, 3, 1, 256, window=(16, 0), segments="packed"),
    Case("mha_d32_full_no_segments", 2, 33, 2, 2, 32, segments="none"),
    Case("mqa_d16_window_wider_than_seq", 2, 20, 3, 1, 16, window=(100, 50)),
    Case("bf16_mqa_full_d256", 2, 64, 3, 1, 256, dtype="bfloat16"),
    Case("bf16_gqa_window_d128", 2, 70, 4, 2, 128, dtype="bfloat16", window=(5, 9),
         segments="packed"),
    # The real GPU tables' tiles in interpret mode; the first is the long case.
    Case("bf16_mqa_d256_window256_sm90", 2, 513, 3, 1, 256, dtype="bfloat16", window=(256, 256),
         arch="sm90"),
    Case("bf16_mqa_d256_window_sm80", 2, 130, 3, 1, 256, dtype="bfloat16", window=(40, 40),
         segments="packed", arch="sm80"),
]


def _attend(case: Case, implementation: str):
    seg = segment_ids_for(case)
    seg = None if seg is None else jnp.asarray(seg)
    if implementation == "pallas_triton" and case.arch is not None and ON_CPU:
        def fn(q, k, v):
            return attention_pallas_triton(
                q, k, v, jnp.ones(q.shape[:2], jnp.int32) if seg is None else seg,
                window=case.window, scale=case.scale or case.d**-0.5, interpret=True,
                arch=case.arch,
            )
    else:
        fn = functools.partial(attention, segment_ids=seg, window=case.window, scale=case.scale,
                               implementation=implementation)
    return suite.jitted_vjp(fn)


@functools.cache
def _results(case: Case, implementation: str):
    """(inputs, compiled fn, outputs): computed once per case, shared by the checks below."""
    if implementation == "pallas_triton" and case.dtype == "float32" and not ON_CPU:
        pytest.skip("pallas_triton refuses float32 on a GPU (test_float32_is_refused_on_gpu)")
    if implementation == "splash_tpu" and not SPLASH_RUNS:
        pytest.skip("splash_tpu runs on a TPU or in interpret mode")
    inputs = _inputs(case)
    run = _attend(case, implementation)
    return inputs, run, jax.device_get(run(*inputs))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_attention_matches_reference(case, implementation):
    inputs, _, got = _results(case, implementation)
    q, k, v, d_out = inputs
    scale = case.d**-0.5 if case.scale is None else case.scale
    want = reference(*(np.asarray(x.astype(jnp.float32)) for x in (q, k, v)),
                     segment_ids_for(case), case.window, scale,
                     np.asarray(d_out.astype(jnp.float32)))
    tol = TOLERANCE[case.dtype]
    for name, x, ref in zip(("out", "dq", "dk", "dv"), got, want):
        assert x.dtype == jnp.dtype(case.dtype), name
        assert np.isfinite(np.asarray(x, np.float32)).all(), f"{name} has NaN/Inf"
        err = _rel_l2(x, ref)
        assert err <= tol, f"{name}: relative L2 error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", [c for c in CASES if c.segments != "none"], ids=lambda c: c.name)
def test_attention_padding_is_exact_zero(case, implementation):
    _, _, (out, dq, dk, dv) = _results(case, implementation)
    pad = segment_ids_for(case) == 0  # [B, T]
    assert pad.any()
    for name, x in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert (np.asarray(x, np.float32)[pad] == 0).all(), f"{name} not exactly 0 on padding"


@pytest.mark.parametrize("case", [CASES[0], CASES[7]], ids=lambda c: c.name)
def test_pallas_triton_is_deterministic(case):
    inputs, run, first = _results(case, "pallas_triton")
    again = jax.device_get(run(*inputs))
    for x, y in zip(first, again):
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_attention_matches_jax_nn_with_lengths(implementation):
    """Second oracle: jax.nn.dot_product_attention with length padding and a local window."""
    if implementation == "pallas_triton" and not ON_CPU:
        pytest.skip("pallas_triton refuses float32 on a GPU")
    if implementation == "splash_tpu" and not SPLASH_RUNS:
        pytest.skip("splash_tpu runs on a TPU or in interpret mode")
    b, t, hq, hkv, d, window = 2, 40, 3, 1, 64, (6, 4)
    rng = np.random.default_rng(7)
    q, k, v, d_out = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in
                      [(b, t, hq, d), (b, t, hkv, d), (b, t, hkv, d), (b, t, hq, d)])
    lengths = jnp.array([t, 23], jnp.int32)
    seg = (jnp.arange(t)[None, :] < lengths[:, None]).astype(jnp.int32)

    def oracle(q, k, v):
        return jax.nn.dot_product_attention(
            q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
            local_window_size=window, implementation="xla",
        )

    def ours(q, k, v):
        return attention(q, k, v, seg, window=window, implementation=implementation)

    @functools.partial(jax.jit, static_argnums=0)
    def value_and_vjp(fn, q, k, v, d_out):
        out, vjp = jax.vjp(fn, q, k, v)
        return (out, *vjp(d_out))

    with jax.default_matmul_precision("highest"):
        want = value_and_vjp(oracle, q, k, v, d_out)
    got = value_and_vjp(ours, q, k, v, d_out)
    for name, x, ref in zip(("out", "dq", "dk", "dv"), got, want):
        err = _rel_l2(x, np.asarray(ref, np.float64))
        assert err <= 1e-5, f"{name}: {err:.2e}"


def test_pallas_triton_rejects_head_dim_above_256():
    q = jnp.zeros((1, 8, 3, 512), jnp.float32)
    kv = jnp.zeros((1, 8, 1, 512), jnp.float32)
    with pytest.raises(NotImplementedError, match="head_dim"):
        attention(q, kv, kv, implementation="pallas_triton")
    # implementation=None picks one that can serve it.
    assert jax.eval_shape(lambda: attention(q, kv, kv)).shape == q.shape


@f32_pallas
@pytest.mark.parametrize("head_dim", [12, 48])
def test_pallas_triton_pads_head_dims_that_are_not_powers_of_two(head_dim):
    """Zero-padded head dims give the same output and gradients as the unpadded reference."""
    keys = jax.random.split(jax.random.key(head_dim), 4)
    q = jax.random.normal(keys[0], (2, 21, 4, head_dim), jnp.float32)
    k = jax.random.normal(keys[1], (2, 21, 2, head_dim), jnp.float32)
    v = jax.random.normal(keys[2], (2, 21, 2, head_dim), jnp.float32)
    d_out = jax.random.normal(keys[3], q.shape, jnp.float32)
    seg = jnp.array([[1] * 21, [1] * 9 + [2] * 7 + [0] * 5], jnp.int32)

    def run(implementation):
        f = lambda q, k, v: attention(q, k, v, seg, window=(3, 5), scale=0.3,
                                      implementation=implementation)
        out, vjp = jax.vjp(f, q, k, v)
        return (out, *vjp(d_out))

    for got, want in zip(run("pallas_triton"), run("xla")):
        assert _rel_l2(got, np.asarray(want, np.float64)) <= 1e-5


def test_pallas_triton_zero_length_sequence():
    q = jnp.zeros((2, 0, 3, 16), jnp.bfloat16)
    kv = jnp.zeros((2, 0, 1, 16), jnp.bfloat16)
    assert attention(q, kv, kv, implementation="pallas_triton").shape == q.shape


@pytest.mark.parametrize("arch", ["sm80", "sm86", "sm90"])
def test_float32_is_refused_on_gpu(arch):
    q = jnp.zeros((1, 8, 3, 64), jnp.float32)
    kv = jnp.zeros((1, 8, 1, 64), jnp.float32)
    with pytest.raises(NotImplementedError, match="bfloat16 only.*implementation='xla'"):
        attention_pallas_triton(q, kv, kv, None, window=None, scale=None, interpret=False,
                                arch=arch)


def test_key_ranges_docstring_example():
    seg = jnp.array([[1, 1, 1, 2, 2, 0]], jnp.int32)
    ranges = jax.jit(functools.partial(key_ranges, window=(1, 0), groups=1, rows=8, keys=8))
    k_lo, k_hi, q_lo, q_hi = ranges(seg)
    np.testing.assert_array_equal(k_lo[0, :6], [0, 0, 1, 3, 3, 8])
    np.testing.assert_array_equal(k_hi[0, :6], [1, 2, 3, 4, 5, 0])
    # Key j is seen by positions j..j+left within its run.
    np.testing.assert_array_equal(q_lo[0, :6], [0, 1, 2, 3, 4, 8])
    np.testing.assert_array_equal(q_hi[0, :6], [2, 3, 3, 5, 5, 0])
    # Padded rows / keys see nothing.
    assert (k_lo[0, 6:] == 8).all() and (k_hi[0, 6:] == 0).all()

"""Attention implementations vs an independent float64 reference: output and all three gradients.

One shared suite runs every implementation ("xla" and "pallas_triton"; the
latter in interpret mode on CPU, compiled on a GPU) over the same cases:
full and windowed (symmetric, asymmetric, one-sided, wider than the sequence),
MQA 3:1, GQA 4:2 and MHA, head_dim 16-256, lengths that are not block
multiples, packed segments, rows of all padding, float32 and bfloat16.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tarka_jax.kernels import attention
from tarka_jax.kernels.pallas_triton import attention_pallas_triton, key_ranges

# jax >= 0.11 warns that Pallas Triton is deprecated; it still ships and is what we test.
pytestmark = pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated")
ON_CPU = jax.default_backend() == "cpu"
# pallas_triton refuses float32 on a GPU (spills; docs/kernels.md): those checks are CPU-only.
f32_pallas = pytest.mark.skipif(not ON_CPU, reason="pallas_triton refuses float32 on a GPU")
IMPLEMENTATIONS = ("xla", "pallas_triton")
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}  # relative L2 vs the float64 reference


def reference(q, k, v, segment_ids, window, scale, d_out):
    """Dense masked softmax attention and its gradients, written out in float64 numpy.

    Returns out, dq, dk, dv. A query that sees no key has output 0 and gradient 0.
    """
    q, k, v, d_out = (np.asarray(x, np.float64) for x in (q, k, v, d_out))
    b, t, hq, d = q.shape
    groups = hq // k.shape[2]
    seg = np.ones((b, t), np.int64) if segment_ids is None else np.asarray(segment_ids)
    seen = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)  # [B, Tq, Tk]
    if window is not None:
        offset = np.arange(t)[None, :] - np.arange(t)[:, None]  # j - i
        seen &= (offset >= -window[0]) & (offset <= window[1])
    mask = seen[:, None]  # [B, 1, Tq, Tk]
    k_rep, v_rep = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)  # head h -> h // G
    s = np.einsum("bihd,bjhd->bhij", q, k_rep) * scale
    s = np.where(mask, s, -np.inf)
    s_max = s.max(axis=-1, keepdims=True)
    e = np.where(mask, np.exp(s - np.where(np.isfinite(s_max), s_max, 0.0)), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    p = e / np.where(total > 0, total, 1.0)
    out = np.einsum("bhij,bjhd->bihd", p, v_rep)
    dp = np.einsum("bihd,bjhd->bhij", d_out, v_rep)
    delta = np.einsum("bihd,bihd->bhi", d_out, out)[..., None]
    ds = p * (dp - delta)
    dq = scale * np.einsum("bhij,bjhd->bihd", ds, k_rep)
    dk = scale * np.einsum("bhij,bihd->bjhd", ds, q).reshape(b, t, -1, groups, d).sum(3)
    dv = np.einsum("bhij,bihd->bjhd", p, d_out).reshape(b, t, -1, groups, d).sum(3)
    return out, dq, dk, dv


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    b: int
    t: int
    hq: int
    hkv: int
    d: int
    dtype: str = "float32"
    window: tuple[int, int] | None = None
    segments: str = "padded"  # "none" | "padded" | "packed"
    scale: float | None = None
    arch: str | None = None  # block table to run in interpret mode (None: small tiles)


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


def segment_ids_for(case: Case):
    """None, or int32 [B, T] with a ragged tail of padding, whole rows of padding, packing."""
    if case.segments == "none":
        return None
    b, t = case.b, case.t
    seg = np.zeros((b, t), np.int32)
    for row in range(b):
        if case.segments == "padded":
            # Row 0 full, the last row (when B > 2) all padding, others ragged.
            length = t if row == 0 else (0 if row == b - 1 and b > 2 else t - 7 * row - 3)
            seg[row, :length] = 1
        else:
            # Runs of different lengths, a segment of one token, then padding.
            cuts = [0, t // 3 + row, t // 3 + row + 1, (3 * t) // 4, t - 2 - row]
            for sid, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:]), start=1):
                seg[row, lo:hi] = sid
    return seg


def _inputs(case: Case):
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    shapes = [(case.b, case.t, case.hq, case.d), (case.b, case.t, case.hkv, case.d),
              (case.b, case.t, case.hkv, case.d), (case.b, case.t, case.hq, case.d)]
    # Round to the input dtype first: the reference sees exactly the kernel's values.
    return [jnp.asarray(rng.standard_normal(s), jnp.float32).astype(case.dtype) for s in shapes]


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

    @jax.jit
    def run(q, k, v, d_out):
        out, vjp = jax.vjp(fn, q, k, v)
        return (out, *vjp(d_out))

    return run


@functools.cache
def _results(case: Case, implementation: str):
    """(inputs, compiled fn, outputs): computed once per case, shared by the checks below."""
    if implementation == "pallas_triton" and case.dtype == "float32" and not ON_CPU:
        pytest.skip("pallas_triton refuses float32 on a GPU (test_float32_is_refused_on_gpu)")
    inputs = _inputs(case)
    run = _attend(case, implementation)
    return inputs, run, jax.device_get(run(*inputs))


def _rel_l2(x, ref):
    x = np.asarray(x, np.float64)
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


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

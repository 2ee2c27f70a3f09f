"""``implementation="splash_tpu"`` (jax's Pallas TPU splash kernel) in interpret mode on CPU.

The shared cases of tests/test_kernel_attention.py run it against the float64
reference too (values, gradients, exact zeros at padding, jax.nn's oracle).
This file adds what is particular to splash: windows whose edges fall on and
across its 128-position blocks, lengths and head dims that are not multiples
of 128 (padded inside), a whole model forward and gradient against ``"xla"``,
the lowering for TPU (Mosaic custom calls, no TPU needed), and the refusal off
a TPU that lets ``implementation=None`` move on.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import kernel_suite as suite  # tests/kernel_suite.py (tests/ is on sys.path: conftest.py)
import numpy as np
import pytest

from tarka_jax.kernels import attention, preferred_implementations
from tarka_jax.kernels.splash_tpu import attention_splash_tpu

Case = suite.Case

CASES = [
    # Window edges on a block boundary (128) and across one; T not a block multiple.
    Case("window_edge_on_block", 1, 256, 3, 1, 64, window=(128, 127), segments="packed"),
    Case("window_edge_across_blocks", 2, 300, 3, 1, 32, window=(130, 5), segments="padded"),
    # The production layer: head_dim 256, window (256, 256), two full blocks and a tail.
    Case("bf16_production_window", 1, 300, 3, 1, 256, dtype="bfloat16", window=(256, 256),
         segments="packed"),
    Case("f32_production_full", 1, 256, 3, 1, 256, window=None, segments="packed"),
]


@functools.cache
def _results(index: int, implementation: str = "splash_tpu"):
    case = CASES[index]
    inputs = suite.inputs(case)
    seg = jnp.asarray(suite.segment_ids_for(case))
    fn = functools.partial(attention, segment_ids=seg, window=case.window, scale=case.scale,
                           implementation=implementation)
    return inputs, jax.device_get(suite.jitted_vjp(fn)(*inputs))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.name for c in CASES])
def test_matches_float64_reference(index):
    (q, k, v, d_out), got = _results(index)
    suite.check_against_reference(CASES[index], got, q, k, v, d_out)
    pad = suite.segment_ids_for(CASES[index]) == 0
    for name, x in zip(("out", "dq", "dk", "dv"), got):
        assert (np.asarray(x, np.float32)[pad] == 0).all(), f"{name} not exactly 0 on padding"


@pytest.mark.parametrize("index", [i for i, c in enumerate(CASES) if c.dtype == "float32"],
                         ids=[c.name for c in CASES if c.dtype == "float32"])
def test_matches_xla_blocked(index):
    """Same outputs and gradients as the other implementations, to float32 rounding."""
    _, got = _results(index)
    _, want = _results(index, "xla_blocked")
    for name, x, ref in zip(("out", "dq", "dk", "dv"), got, want):
        err = suite.rel_l2(x, np.asarray(ref, np.float64))
        assert err <= 2e-6, f"{name}: {err:.2e} vs xla_blocked"


def test_window_reads_nothing_outside_it():
    """Key blocks outside a query block's window are never read (splash skips them).

    Queries 0..127 (block 0) reach keys <= 131 (blocks 0, 1): NaN keys from 256 on
    (blocks 2, 3) must not reach them. (Inside a block that is read, a masked NaN
    value would: 0 * NaN; real keys are finite.)
    """
    case = Case("probe", 1, 512, 3, 1, 32, window=(4, 4), segments="none")
    q, k, v, _ = suite.inputs(case)
    fn = jax.jit(functools.partial(attention, window=(4, 4), implementation="splash_tpu"))
    base = fn(q, k, v)
    poisoned = fn(q, k.at[:, 256:].set(jnp.nan), v.at[:, 256:].set(jnp.nan))
    np.testing.assert_array_equal(np.asarray(poisoned[:, :128]), np.asarray(base[:, :128]))
    assert np.isnan(np.asarray(poisoned[:, 252:256])).all()  # these do read block 2


def test_model_forward_and_gradient_equal_xla():
    """A whole encoder (window and full layers, packed rows) with splash equals it with xla."""
    from tarka_jax.nn.config import DenseSpec, ModelConfig
    from tarka_jax.nn.encoder import embed, init_params

    config = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=40, num_layers=2,
                         num_heads=3, num_kv_heads=1, head_dim=16, query_pre_attn_scalar=16,
                         layer_types=("sliding_attention", "full_attention"),
                         sliding_window=16, dense=(DenseSpec(32, 24),))
    params = init_params(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    seg = np.zeros((2, 40), np.int32)
    seg[0, :17], seg[0, 17:33], seg[1, :29] = 1, 2, 1  # two texts + padding; one + padding
    pos = np.zeros_like(seg)
    for row in range(2):
        for s in (1, 2):
            pos[row, seg[row] == s] = np.arange((seg[row] == s).sum())
    batch = {"input_ids": np.where(seg > 0, rng.integers(1, 97, seg.shape), 0).astype(np.int32),
             "segment_ids": seg, "positions": pos}

    def loss(p, implementation):
        e = embed(p, batch, config, attention=implementation, segments_per_row=2)
        return jnp.sum(e * jnp.cos(3 * e)), e

    grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
    (g_splash, e_splash), (g_xla, e_xla) = grad(params, "splash_tpu"), grad(params, "xla")
    assert suite.rel_l2(e_splash, np.asarray(e_xla, np.float64)) <= 1e-5
    for a, b in zip(jax.tree.leaves(g_splash), jax.tree.leaves(g_xla)):
        assert suite.rel_l2(a, np.asarray(b, np.float64)) <= 1e-5


@pytest.mark.parametrize("hq,hkv", [(3, 1), (4, 2)], ids=["mqa", "gqa"])
def test_lowers_for_tpu_without_a_tpu(hq, hkv):
    """The Pallas -> Mosaic lowering interpret mode skips: forward, dq and dkv kernels.

    Compiling the Mosaic modules needs libtpu (benchmarks/accelerator_compile.py,
    the tpu-compile CI leg); this checks our shapes reach it at production size.
    """
    b, t, d = 2, 300, 256
    args = [jax.ShapeDtypeStruct((b, t, hq, d), jnp.bfloat16),
            jax.ShapeDtypeStruct((b, t, hkv, d), jnp.bfloat16),
            jax.ShapeDtypeStruct((b, t, hkv, d), jnp.bfloat16),
            jax.ShapeDtypeStruct((b, t), jnp.int32)]

    def loss(q, k, v, seg):
        out = attention_splash_tpu(q, k, v, seg, window=(256, 256), scale=d**-0.5,
                                   interpret=False, on_tpu=True)
        return jnp.sum(out.astype(jnp.float32))

    text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(*args).lower(
        lowering_platforms=("tpu",)).as_text()
    assert text.count("tpu_custom_call") == 3  # forward (with residuals), dq, dkv


def test_refused_off_tpu_without_interpret():
    q = jnp.ones((1, 8, 3, 16), jnp.float32)
    kv = jnp.ones((1, 8, 1, 16), jnp.float32)
    with pytest.raises(NotImplementedError, match="splash_tpu runs on a TPU"):
        attention(q, kv, kv, implementation="splash_tpu", interpret=False)
    with pytest.raises(NotImplementedError, match="float32 or bfloat16"):
        attention(q.astype(jnp.bfloat16), kv, kv, implementation="splash_tpu")
    assert "splash_tpu" not in preferred_implementations("cpu")  # interpret mode is for tests
    # TPU: compiled-and-counted evidence (BENCHMARKS.md), the others behind it.
    assert preferred_implementations("tpu") == ("splash_tpu", "xla_blocked", "xla")


def test_zero_length_sequence():
    q = jnp.zeros((2, 0, 3, 16), jnp.bfloat16)
    kv = jnp.zeros((2, 0, 1, 16), jnp.bfloat16)
    assert attention(q, kv, kv, window=(3, 3), implementation="splash_tpu").shape == q.shape


def test_platform_is_the_mesh_in_context():
    """A mesh of TPU devices in context makes the TPU order (and non-interpret kernels) apply,
    as when compiling for a TPU slice from a CPU host (benchmarks/accelerator_compile.py)."""
    from tarka_jax.kernels.dispatch import target_platform

    sharding = jax.sharding
    if not hasattr(sharding, "AbstractDevice"):
        pytest.skip("this jax has no abstract devices")
    mesh = sharding.AbstractMesh(
        (1,), ("data",), (sharding.AxisType.Explicit,),
        abstract_device=sharding.AbstractDevice(device_kind="TPU v5 lite", num_cores=1,
                                                platform="tpu"))
    assert target_platform() == jax.default_backend()
    with sharding.use_abstract_mesh(mesh):
        assert target_platform() == "tpu"
        assert preferred_implementations() == preferred_implementations("tpu")


def test_none_on_tpu_leaves_short_rows_to_the_next(monkeypatch):
    """Under the TPU order, rows shorter than one splash block go to xla_blocked."""
    from tarka_jax.kernels import dispatch

    calls = []
    for name in ("splash_tpu", "xla_blocked"):
        real = dispatch.IMPLEMENTATIONS[name]

        def spy(*args, name=name, real=real, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setitem(dispatch.IMPLEMENTATIONS, name, spy)
    monkeypatch.setattr(dispatch, "target_platform", lambda: "tpu")
    for t in (16, 128):
        q = jnp.ones((1, t, 3, 16), jnp.float32)
        kv = jnp.ones((1, t, 1, 16), jnp.float32)
        attention(q, kv, kv, interpret=True)
    assert calls == ["xla_blocked", "splash_tpu"]

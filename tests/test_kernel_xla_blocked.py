"""``implementation="xla_blocked"`` vs the float64 reference and vs the dense ``"xla"``.

Both key ranges are exercised: the windowed slab (small blocks so a window
reaches only part of the sequence) and the whole row (full layers, or windows
whose slab would cover the sequence). Cases cover MQA 3:1, GQA 4:2, MHA,
lengths that are not block multiples (a partial last block), T = 1, packed
segments, rows of all padding, float32 and bfloat16, outputs and all three
gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import kernel_suite as suite  # tests/kernel_suite.py (tests/ is on sys.path: conftest.py)
import numpy as np
import pytest

from tarka_jax.kernels import attention, check_implementation_name, preferred_implementations
from tarka_jax.kernels.xla_blocked import attention_xla_blocked

Case = suite.Case

CASES = [
    # block=None: the default block (slab path only for long sequences).
    (Case("mqa_full_padded", 3, 45, 3, 1, 64), None),
    (Case("mqa_full_padded_blocks", 3, 45, 3, 1, 64), 16),  # 45 = 2 * 16 + 13
    (Case("mqa_window_sym_packed", 2, 77, 3, 1, 64, window=(8, 8), segments="packed"), 8),
    (Case("gqa_window_asym_packed", 2, 50, 4, 2, 128, window=(3, 12), segments="packed",
          scale=0.3), 5),
    (Case("mqa_d256_window_left_only", 1, 100, 3, 1, 256, window=(16, 0), segments="packed"), 16),
    (Case("mha_d32_full_no_segments", 2, 33, 2, 2, 32, segments="none"), 8),
    (Case("mqa_window_wider_than_seq", 2, 20, 3, 1, 16, window=(100, 50)), 4),
    (Case("mqa_window_one_block_each_side", 2, 61, 3, 1, 32, window=(9, 9)), 9),
    (Case("mqa_t1", 2, 1, 3, 1, 32, window=(4, 4), segments="none"), None),
    (Case("mqa_t1_padded_row", 3, 1, 3, 1, 32), None),
    (Case("mqa_window256_long", 2, 700, 3, 1, 64, window=(256, 256), segments="packed"), None),
    (Case("bf16_mqa_full_d256", 2, 64, 3, 1, 256, dtype="bfloat16"), 16),
    (Case("bf16_gqa_window_d128", 2, 70, 4, 2, 128, dtype="bfloat16", window=(5, 9),
          segments="packed"), 8),
]
IDS = [c.name for c, _ in CASES]


def _run(case, block, implementation="xla_blocked"):
    seg = suite.segment_ids_for(case)
    seg = None if seg is None else jnp.asarray(seg)
    if implementation == "xla_blocked":
        scale = case.scale or case.d**-0.5
        seg_arr = jnp.ones((case.b, case.t), jnp.int32) if seg is None else seg

        def fn(q, k, v):
            return attention_xla_blocked(q, k, v, seg_arr, window=case.window, scale=scale,
                                         block=block)
    else:
        fn = functools.partial(attention, segment_ids=seg, window=case.window, scale=case.scale,
                               implementation=implementation)
    return suite.jitted_vjp(fn)


@functools.cache
def _results(index, implementation="xla_blocked"):
    case, block = CASES[index]
    inputs = suite.inputs(case)
    return inputs, jax.device_get(_run(case, block, implementation)(*inputs))


@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_matches_float64_reference(index):
    (q, k, v, d_out), got = _results(index)
    suite.check_against_reference(CASES[index][0], got, q, k, v, d_out)


@pytest.mark.parametrize("index", [i for i, (c, _) in enumerate(CASES) if c.segments != "none"],
                         ids=[c.name for c, _ in CASES if c.segments != "none"])
def test_padding_is_exact_zero(index):
    case = CASES[index][0]
    _, (out, dq, dk, dv) = _results(index)
    pad = suite.segment_ids_for(case) == 0  # [B, T]
    if not pad.any():
        pytest.skip("no padding in this case")
    for name, x in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert (np.asarray(x, np.float32)[pad] == 0).all(), f"{name} not exactly 0 on padding"


@pytest.mark.parametrize("index", [i for i, (c, _) in enumerate(CASES) if c.dtype == "float32"],
                         ids=[c.name for c, _ in CASES if c.dtype == "float32"])
def test_matches_dense_xla(index):
    """Same outputs and gradients as the dense implementation, to float32 rounding."""
    _, got = _results(index)
    _, want = _results(index, "xla")
    for name, x, ref in zip(("out", "dq", "dk", "dv"), got, want):
        if np.linalg.norm(ref) < 1e-9:  # one visible key: dq, dk are 0 up to rounding
            assert np.abs(x).max() <= 1e-6, name
            continue
        err = suite.rel_l2(x, np.asarray(ref, np.float64))
        assert err <= 2e-6, f"{name}: {err:.2e} vs xla"


@pytest.mark.parametrize("window", [None, (3, 3)])
def test_zero_length_sequence(window):
    q = jnp.zeros((2, 0, 3, 16), jnp.float32)
    kv = jnp.zeros((2, 0, 1, 16), jnp.float32)
    out = attention(q, kv, kv, window=window, implementation="xla_blocked")
    assert out.shape == q.shape


def test_window_path_reads_only_the_slab():
    """A key outside every query's window can change nothing: the slab path really skips it."""
    case = Case("probe", 1, 64, 3, 1, 16, window=(4, 4), segments="none")
    q, k, v, _ = suite.inputs(case)
    seg = jnp.ones((1, 64), jnp.int32)
    fn = jax.jit(functools.partial(attention_xla_blocked, window=(4, 4), scale=0.25, block=8))
    base = fn(q, k, v, seg)
    # Poison keys 40..63 for queries 0..31: they are > 4 away from every one of them.
    poisoned = fn(q, k.at[:, 40:].set(jnp.nan), v.at[:, 40:].set(jnp.nan), seg)
    np.testing.assert_array_equal(np.asarray(poisoned[:, :32]), np.asarray(base[:, :32]))


def test_default_table_and_name_check():
    assert preferred_implementations("cpu")[0] == "xla_blocked"
    assert preferred_implementations("gpu") == ("xla",)
    assert preferred_implementations("no-such-platform") == ("xla",)
    assert check_implementation_name(None) is None
    assert check_implementation_name("xla_blocked") == "xla_blocked"
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'.*xla_blocked"):
        check_implementation_name("flash")


def test_none_path_falls_through_not_implemented_and_reports_every_reason(monkeypatch):
    from tarka_jax.kernels import dispatch

    def refuses(why):
        def impl(*args, **kwargs):
            raise NotImplementedError(why)
        return impl

    monkeypatch.setitem(dispatch.IMPLEMENTATIONS, "xla_blocked", refuses("no blocks today"))
    q = jnp.ones((1, 4, 3, 8), jnp.float32)
    kv = jnp.ones((1, 4, 1, 8), jnp.float32)
    monkeypatch.setattr(dispatch, "_PREFERRED", {jax.default_backend(): ("xla_blocked", "xla")})
    monkeypatch.setitem(dispatch.IMPLEMENTATIONS, "xla", refuses("dense is off"))
    with pytest.raises(NotImplementedError, match="xla_blocked: no blocks today; xla: dense is off"):
        attention(q, kv, kv)
    # With one refusal, the next in the order serves the input.
    monkeypatch.setitem(dispatch.IMPLEMENTATIONS, "xla", dispatch._xla)
    assert attention(q, kv, kv).shape == q.shape

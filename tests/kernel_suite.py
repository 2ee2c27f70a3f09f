"""Shared pieces of the attention kernel tests: the float64 reference, cases, inputs.

Every implementation's test file checks against the same reference with the
same tolerances (tests/test_kernel_xla_blocked.py; tests/test_kernel_attention.py
keeps its own copy until it loads this one).

Not a test module (no ``test_`` prefix): kernel test files load it by path
(the suite runs with ``--import-mode=importlib``, so ``tests/`` is not a package).
"""

from __future__ import annotations

import dataclasses
import zlib

import jax.numpy as jnp
import numpy as np

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
    s_max = s.max(axis=-1, keepdims=True) if t else s
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
    arch: str | None = None  # Pallas: block table to run in interpret mode (None: small tiles)


def segment_ids_for(case: Case):
    """None, or int32 [B, T] with a ragged tail of padding, whole rows of padding, packing."""
    if case.segments == "none":
        return None
    b, t = case.b, case.t
    seg = np.zeros((b, t), np.int32)
    for row in range(b):
        if case.segments == "padded":
            # Row 0 full, the last row (when B > 2) all padding, others ragged.
            length = t if row == 0 else (0 if row == b - 1 and b > 2 else max(t - 7 * row - 3, 0))
            seg[row, :length] = 1
        else:
            # Runs of different lengths, a segment of one token, then padding.
            cuts = [0, t // 3 + row, t // 3 + row + 1, (3 * t) // 4, t - 2 - row]
            for sid, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:]), start=1):
                seg[row, lo:hi] = sid
    return seg


def inputs(case: Case):
    """Fresh random q, k, v, d_out, rounded to the case's dtype (the reference sees the same)."""
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    shapes = [(case.b, case.t, case.hq, case.d), (case.b, case.t, case.hkv, case.d),
              (case.b, case.t, case.hkv, case.d), (case.b, case.t, case.hq, case.d)]
    return [jnp.asarray(rng.standard_normal(s), jnp.float32).astype(case.dtype) for s in shapes]


def rel_l2(x, ref):
    x = np.asarray(x, np.float64)
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


def check_against_reference(case: Case, got, q, k, v, d_out):
    """Assert out, dq, dk, dv match the float64 reference within the dtype's tolerance."""
    scale = case.d**-0.5 if case.scale is None else case.scale
    want = reference(*(np.asarray(x.astype(jnp.float32)) for x in (q, k, v)),
                     segment_ids_for(case), case.window, scale,
                     np.asarray(d_out.astype(jnp.float32)))
    tol = TOLERANCE[case.dtype]
    for name, x, ref in zip(("out", "dq", "dk", "dv"), got, want):
        assert x.dtype == jnp.dtype(case.dtype), name
        assert np.isfinite(np.asarray(x, np.float32)).all(), f"{name} has NaN/Inf"
        if np.linalg.norm(ref) < 1e-9:  # e.g. dq, dk with one visible key: exactly 0
            assert np.abs(np.asarray(x, np.float32)).max() <= tol, f"{name} should be ~0"
            continue
        err = rel_l2(x, ref)
        assert err <= tol, f"{name}: relative L2 error {err:.2e} > {tol:.0e}"


def jitted_vjp(fn):
    """``run(q, k, v, d_out) -> (out, dq, dk, dv)``: ``fn``'s output and its vector-Jacobian
    product, jitted (what every implementation's value-and-gradient test compares)."""
    import jax

    @jax.jit
    def run(q, k, v, d_out):
        out, vjp = jax.vjp(fn, q, k, v)
        return (out, *vjp(d_out))

    return run

"""Pallas Triton forward kernel: flash attention over folded query rows.

Layout (prepared by :mod:`tarka_jax.kernels.pallas_triton`):
  q: [B, Hkv, R, D], the G = Hq / Hkv query heads of one K/V head folded into
     rows (row r is position r // G, head r % G), R padded to the row block.
  k, v: [B, Tk, Hkv, D] in the caller's layout (Tk padded to the key block).
  k_lo, k_hi: int32 [B, R]: row r may attend keys j with k_lo[r] <= j < k_hi[r].
     Window and segment bounds are folded into this range (segments are
     contiguous runs), so it is both the mask and the block-skipping bound.
     Rows that see nothing have k_lo > k_hi (k_lo = Tk, k_hi = 0).

Softmax runs in base 2 (scale * log2(e) folded into the scores); the
log-sum-exp residual is in base 2 as well, +inf for rows that see nothing.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from tarka_jax.kernels.block_sizes import KernelBlocks

#: Finite "minus infinity": masked scores stay finite so exp2(mask - max) is an
#: exact 0 and never inf - inf.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
LOG2E = math.log2(math.e)


def dot_precision(dtype):
    """f32 inputs must not run as TF32 on GPU; bf16 uses the native MMA."""
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def loop_over_blocks(lo, hi, block, body, carry, *, mask_empty: bool):
    """Runs ``body(j, carry, masked)`` over the blocks j that any range [lo, hi) touches.

    Ranges that are empty (lo > hi: padding) do not widen the loop. Blocks that
    every range covers completely run with ``masked=False`` (no mask compares);
    with ``mask_empty=False`` empty ranges do not count for that, which is
    right where their results are discarded anyway (rows that see nothing).
    """
    first = lax.div(jnp.min(lo), block)
    last = lax.div(jnp.max(hi) + block - 1, block)
    if mask_empty:
        full_lo, full_hi = jnp.max(lo), jnp.min(hi)
    else:
        seen = hi > lo
        full_lo = jnp.max(jnp.where(seen, lo, 0))
        full_hi = jnp.min(jnp.where(seen, hi, jnp.iinfo(jnp.int32).max))
    # [a, b): blocks inside every range; [first, a) and [b, last) need the mask.
    a = jnp.maximum(first, jnp.minimum(lax.div(full_lo + block - 1, block), last))
    b = jnp.maximum(a, jnp.minimum(lax.div(full_hi, block), last))
    carry = lax.fori_loop(first, a, functools.partial(body, masked=True), carry)
    carry = lax.fori_loop(a, b, functools.partial(body, masked=False), carry)
    return lax.fori_loop(b, last, functools.partial(body, masked=True), carry)


def _fwd_kernel(q_ref, k_ref, v_ref, klo_ref, khi_ref, o_ref, lse_ref, *, scale, block_k):
    block_q, head_dim = q_ref.shape
    precision = dot_precision(q_ref.dtype)
    q = q_ref[...]
    k_lo = klo_ref[...]
    k_hi = khi_ref[...]
    qk_scale = scale * LOG2E

    def body(j, carry, masked):
        acc, m_prev, l_prev = carry
        start = j * block_k
        keys = pl.ds(start, block_k)
        k = k_ref[keys, :]
        s = jnp.dot(q, k.T, preferred_element_type=jnp.float32, precision=precision)
        s = s * qk_scale
        if masked:
            span = start + lax.broadcasted_iota(jnp.int32, (1, block_k), 1)
            allowed = (span >= k_lo[:, None]) & (span < k_hi[:, None])
            s = jnp.where(allowed, s, MASK_VALUE)
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=1))
        # Until a row meets its first allowed key, m is MASK_VALUE and masked
        # entries contribute exp2(0) = 1; the first real maximum rescales that
        # garbage by exp2(MASK_VALUE - m) = 0. Rows that never meet one are empty
        # and are zeroed below.
        alpha = jnp.exp2(m_prev - m_next)
        p = jnp.exp2(s - m_next[:, None])
        l_next = l_prev * alpha + jnp.sum(p, axis=1)
        v = v_ref[keys, :]
        pv = jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32, precision=precision)
        acc = acc * alpha[:, None] + pv
        return acc, m_next, l_next

    acc = jnp.zeros((block_q, head_dim), jnp.float32)
    m = jnp.full((block_q,), MASK_VALUE, jnp.float32)
    total = jnp.zeros((block_q,), jnp.float32)
    # Rows that see nothing are zeroed below, so they need no mask.
    acc, m, total = loop_over_blocks(k_lo, k_hi, block_k, body, (acc, m, total),
                                     mask_empty=False)

    empty = k_hi <= k_lo
    l_safe = jnp.where(empty, 1.0, total)
    out = jnp.where(empty[:, None], 0.0, acc / l_safe[:, None])
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, jnp.inf, m + jnp.log2(l_safe))


def forward(q, k, v, k_lo, k_hi, *, scale: float, blocks: KernelBlocks, interpret: bool):
    """Runs the forward kernel; returns (out [B, Hkv, R, D] like q, lse f32 [B, Hkv, R])."""
    b, hkv, rows, d = q.shape
    t_k = k.shape[1]
    bq, bk = blocks.block_q, blocks.block_k
    assert rows % bq == 0 and t_k % bk == 0, (rows, bq, t_k, bk)
    kernel = functools.partial(_fwd_kernel, scale=scale, block_k=bk)
    return pl.pallas_call(
        kernel,
        grid=(rows // bq, b, hkv),
        in_specs=[
            pl.BlockSpec((None, None, bq, d), lambda i, n, h: (n, h, i, 0)),
            pl.BlockSpec((None, t_k, None, d), lambda i, n, h: (n, 0, h, 0)),
            pl.BlockSpec((None, t_k, None, d), lambda i, n, h: (n, 0, h, 0)),
            pl.BlockSpec((None, bq), lambda i, n, h: (n, i)),
            pl.BlockSpec((None, bq), lambda i, n, h: (n, i)),
        ],
        out_specs=[
            pl.BlockSpec((None, None, bq, d), lambda i, n, h: (n, h, i, 0)),
            pl.BlockSpec((None, None, bq), lambda i, n, h: (n, h, i)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((b, hkv, rows), jnp.float32),
        ],
        compiler_params=plgpu.CompilerParams(
            num_warps=blocks.num_warps, num_stages=blocks.num_stages
        ),
        interpret=interpret,
        name="tarka_attention_fwd",
    )(q, k, v, k_lo, k_hi)

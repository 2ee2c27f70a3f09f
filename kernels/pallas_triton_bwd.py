"""Pallas Triton backward kernels: dK/dV (loop over query rows) and dQ (loop over keys).

No atomics, so the result is deterministic: each program owns its output
tile. ``delta = rowsum(dO * O)`` comes from XLA. The dK/dV kernel reads the
folded query rows of all G heads of its K/V head, so the head sum happens
inside the kernel's accumulator.

Same layout as :mod:`tarka_jax.kernels.pallas_triton_fwd`, plus for the dK/dV
kernel the per-key range of folded query rows: key j is seen by rows r with
q_lo[j] <= r < q_hi[j] (q_lo = R, q_hi = 0 for keys nobody sees).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from tarka_jax.kernels.block_sizes import KernelBlocks
from tarka_jax.kernels.pallas_triton_fwd import LOG2E, dot_precision, loop_over_blocks


def _dkdv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qlo_ref, qhi_ref,
                 dk_ref, dv_ref, *, scale, block_q):
    block_k, head_dim = k_ref.shape
    precision = dot_precision(q_ref.dtype)
    k = k_ref[...]
    v = v_ref[...]
    q_lo = qlo_ref[...]
    q_hi = qhi_ref[...]
    qk_scale = scale * LOG2E

    def body(i, carry, masked):
        dk, dv = carry
        start = i * block_q
        rows = pl.ds(start, block_q)
        q = q_ref[rows, :]
        do = do_ref[rows, :]
        lse = lse_ref[rows]
        delta = delta_ref[rows]
        s = jnp.dot(q, k.T, preferred_element_type=jnp.float32, precision=precision) * qk_scale
        # lse is +inf for rows that see nothing, so exp2 gives 0 there too.
        p = jnp.exp2(s - lse[:, None])
        if masked:
            span = start + lax.broadcasted_iota(jnp.int32, (block_q, 1), 0)
            allowed = (span >= q_lo[None, :]) & (span < q_hi[None, :])
            p = jnp.where(allowed, p, 0.0)
        dv = dv + jnp.dot(p.astype(do.dtype).T, do, preferred_element_type=jnp.float32,
                          precision=precision)
        dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32, precision=precision)
        ds = p * (dp - delta[:, None])
        dk = dk + jnp.dot(ds.astype(q.dtype).T, q, preferred_element_type=jnp.float32,
                          precision=precision)
        return dk, dv

    zeros = jnp.zeros((block_k, head_dim), jnp.float32)
    # Keys nobody sees (padding) must get exact zeros: they keep the mask on.
    dk, dv = loop_over_blocks(q_lo, q_hi, block_q, body, (zeros, zeros), mask_empty=True)
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, klo_ref, khi_ref, dq_ref, *,
               scale, block_k):
    block_q, head_dim = q_ref.shape
    precision = dot_precision(q_ref.dtype)
    q = q_ref[...]
    do = do_ref[...]
    lse = lse_ref[...]
    delta = delta_ref[...]
    k_lo = klo_ref[...]
    k_hi = khi_ref[...]
    qk_scale = scale * LOG2E

    def body(j, dq, masked):
        start = j * block_k
        keys = pl.ds(start, block_k)
        k = k_ref[keys, :]
        v = v_ref[keys, :]
        s = jnp.dot(q, k.T, preferred_element_type=jnp.float32, precision=precision) * qk_scale
        p = jnp.exp2(s - lse[:, None])  # 0 on rows that see nothing (lse = +inf)
        if masked:
            span = start + lax.broadcasted_iota(jnp.int32, (1, block_k), 1)
            allowed = (span >= k_lo[:, None]) & (span < k_hi[:, None])
            p = jnp.where(allowed, p, 0.0)
        dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32, precision=precision)
        ds = p * (dp - delta[:, None])
        return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32,
                            precision=precision)

    dq = jnp.zeros((block_q, head_dim), jnp.float32)
    dq = loop_over_blocks(k_lo, k_hi, block_k, body, dq, mask_empty=False)
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def backward(q, k, v, do, lse, delta, k_lo, k_hi, q_lo, q_hi, *, scale: float,
             dkdv_blocks: KernelBlocks, dq_blocks: KernelBlocks, interpret: bool):
    """Returns (dq [B, Hkv, R, D] like q, dk and dv [B, Tk, Hkv, D] like k, v)."""
    b, hkv, rows, d = q.shape
    t_k = k.shape[1]

    bq, bk = dkdv_blocks.block_q, dkdv_blocks.block_k
    assert rows % bq == 0 and t_k % bk == 0, (rows, bq, t_k, bk)
    all_rows = pl.BlockSpec((None, None, rows, d), lambda j, n, h: (n, h, 0, 0))
    all_rows_vec = pl.BlockSpec((None, None, rows), lambda j, n, h: (n, h, 0))
    key_tile = pl.BlockSpec((None, bk, None, d), lambda j, n, h: (n, j, h, 0))
    key_vec = pl.BlockSpec((None, bk), lambda j, n, h: (n, j))
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, scale=scale, block_q=bq),
        grid=(t_k // bk, b, hkv),
        in_specs=[all_rows, key_tile, key_tile, all_rows, all_rows_vec, all_rows_vec,
                  key_vec, key_vec],
        out_specs=[key_tile, key_tile],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=plgpu.CompilerParams(
            num_warps=dkdv_blocks.num_warps, num_stages=dkdv_blocks.num_stages
        ),
        interpret=interpret,
        name="tarka_attention_dkdv",
    )(q, k, v, do, lse, delta, q_lo, q_hi)

    bq, bk = dq_blocks.block_q, dq_blocks.block_k
    assert rows % bq == 0 and t_k % bk == 0, (rows, bq, t_k, bk)
    row_tile = pl.BlockSpec((None, None, bq, d), lambda i, n, h: (n, h, i, 0))
    row_vec = pl.BlockSpec((None, None, bq), lambda i, n, h: (n, h, i))
    all_keys = pl.BlockSpec((None, t_k, None, d), lambda i, n, h: (n, 0, h, 0))
    bound_vec = pl.BlockSpec((None, bq), lambda i, n, h: (n, i))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, scale=scale, block_k=bk),
        grid=(rows // bq, b, hkv),
        in_specs=[row_tile, all_keys, all_keys, row_tile, row_vec, row_vec, bound_vec, bound_vec],
        out_specs=row_tile,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=plgpu.CompilerParams(
            num_warps=dq_blocks.num_warps, num_stages=dq_blocks.num_stages
        ),
        interpret=interpret,
        name="tarka_attention_dq",
    )(q, k, v, do, lse, delta, k_lo, k_hi)
    return dq, dk, dv

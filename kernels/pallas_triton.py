"""Pallas Triton flash attention (forward and backward) for bidirectional MQA/GQA.

What the kernels see is prepared here, in XLA:

* **Heads folded into rows.** ``q [B, T, Hq, D]`` becomes ``[B, Hkv, T*G, D]``
  (G = Hq / Hkv; row r is position r // G, head r % G). For MQA (Hkv = 1)
  this is a free reshape. One program then reads each K/V tile once for all G
  heads; K/V are never repeated, and dK/dV sum the heads inside the kernel.
* **Masks as ranges.** Segments are contiguous runs, so what position i may
  see is one interval ``[k_lo[i], k_hi[i])``: the segment run cut by the
  window. Example, ``segment_ids = [1, 1, 1, 2, 2, 0]``, window (1, 0)::

      i      0  1  2  3  4  5
      k_lo   0  0  1  3  3  -   (position 5 is padding: sees nothing)
      k_hi   1  2  3  4  5  -

  The range is the mask inside a tile and, reduced over a block of rows, the
  loop bounds: blocks outside every row's range are never loaded.
* **Padding.** Rows are padded to the row block and keys to the key block;
  padded rows and keys see nothing. Rows that see nothing give exact zeros
  and zero gradients (their log-sum-exp is +inf).

Segment ids that repeat a value in two separate runs (``[1, 2, 1]``) break the
contract (docs/attention.md): the second run is treated as its own segment.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from tarka_jax.kernels import block_sizes, gpu_arch, sharded
from tarka_jax.kernels.block_sizes import BlockConfig
from tarka_jax.kernels.pallas_triton_bwd import backward
from tarka_jax.kernels.pallas_triton_fwd import forward

_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def key_ranges(segment_ids, window, *, groups: int, rows: int, keys: int):
    """Per-row key ranges and per-key row ranges for the kernels.

    Args:
      segment_ids: int32 [B, T]; 0 = padding; contiguous runs.
      window: None or inclusive (left, right).
      groups: query heads per K/V head (G).
      rows: padded number of folded query rows (>= T * G).
      keys: padded number of keys (>= T).

    Returns:
      k_lo, k_hi: int32 [B, rows]; row r sees keys k_lo[r] <= j < k_hi[r]
        (k_lo = keys, k_hi = 0 when it sees none).
      q_lo, q_hi: int32 [B, keys]; key j is seen by rows q_lo[j] <= r < q_hi[j]
        (q_lo = rows, q_hi = 0 when none).
    """
    b, t = segment_ids.shape
    seg = segment_ids.astype(jnp.int32)
    pos = jnp.arange(t, dtype=jnp.int32)[None, :]
    change = seg[:, 1:] != seg[:, :-1]  # [B, T-1]
    is_start = jnp.concatenate([jnp.ones((b, 1), bool), change], axis=1)
    is_end = jnp.concatenate([change, jnp.ones((b, 1), bool)], axis=1)
    run_start = lax.cummax(jnp.where(is_start, pos, 0), axis=1)
    run_end = lax.cummin(jnp.where(is_end, pos + 1, t), axis=1, reverse=True)
    k_lo, k_hi = run_start, run_end  # what position i sees
    q_lo, q_hi = run_start, run_end  # who sees position j
    if window is not None:
        left, right = (min(int(w), t) for w in window)
        k_lo = jnp.maximum(k_lo, pos - left)
        k_hi = jnp.minimum(k_hi, pos + right + 1)
        q_lo = jnp.maximum(q_lo, pos - right)
        q_hi = jnp.minimum(q_hi, pos + left + 1)
    valid = seg != 0
    k_lo = jnp.where(valid, k_lo, keys)
    k_hi = jnp.where(valid, k_hi, 0)
    q_lo = jnp.where(valid, q_lo * groups, rows)
    q_hi = jnp.where(valid, q_hi * groups, 0)
    # Position -> folded rows (every head of a position shares its range).
    k_lo = jnp.repeat(k_lo, groups, axis=1, total_repeat_length=t * groups)
    k_hi = jnp.repeat(k_hi, groups, axis=1, total_repeat_length=t * groups)
    pad_rows, pad_keys = ((0, 0), (0, rows - t * groups)), ((0, 0), (0, keys - t))
    return (
        jnp.pad(k_lo, pad_rows, constant_values=keys),
        jnp.pad(k_hi, pad_rows),
        jnp.pad(q_lo, pad_keys, constant_values=rows),
        jnp.pad(q_hi, pad_keys),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def _flash(q, k, v, k_lo, k_hi, q_lo, q_hi, scale, config, interpret):
    out, _ = forward(q, k, v, k_lo, k_hi, scale=scale, blocks=config.fwd, interpret=interpret)
    return out


def _flash_fwd(q, k, v, k_lo, k_hi, q_lo, q_hi, scale, config, interpret):
    out, lse = forward(q, k, v, k_lo, k_hi, scale=scale, blocks=config.fwd, interpret=interpret)
    return out, (q, k, v, k_lo, k_hi, q_lo, q_hi, out, lse)


def _flash_bwd(scale, config, interpret, residuals, d_out):
    q, k, v, k_lo, k_hi, q_lo, q_hi, out, lse = residuals
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [B, Hkv, R]
    dq, dk, dv = backward(
        q, k, v, d_out, lse, delta, k_lo, k_hi, q_lo, q_hi, scale=scale,
        dkdv_blocks=config.dkdv, dq_blocks=config.dq, interpret=interpret,
    )
    return dq, dk, dv, None, None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def resolve_config(head_dim: int, dtype, *, interpret: bool, arch: str | None) -> BlockConfig:
    """Block sizes: the frozen table of ``arch`` (default: this GPU's); small tiles to interpret.

    NotImplementedError (the dispatcher's cue to fall back) for a GPU without a
    table (gpu_arch.py), a jax without the Triton backend, or a missing entry.
    """
    gpu_arch.check_triton_backend()
    if arch is None:
        if interpret:
            return block_sizes.INTERPRET_CONFIG
        arch = gpu_arch.device_arch()
    elif arch not in gpu_arch.ARCHS:
        raise NotImplementedError(f"pallas_triton has no tables for arch={arch!r}; "
                                  f"choose from {sorted(gpu_arch.ARCHS)}")
    return block_sizes.block_config(arch, head_dim, jnp.dtype(dtype).itemsize)


def attention_pallas_triton(q, k, v, segment_ids, *, window, scale, interpret,
                            arch: str | None = None, config: BlockConfig | None = None):
    """Flash attention with Pallas Triton kernels; the contract of docs/attention.md.

    Under ``jax.set_mesh(mesh)`` the kernels run per batch shard (kernels/sharded.py).

    Args:
      q: [B, T, Hq, D]; k, v: [B, T, Hkv, D]; float32 or bfloat16, all the same.
      segment_ids: int32 [B, T]; 0 = padding; contiguous runs.
      window: None or inclusive (left, right).
      scale: multiplier on q.k.
      interpret: run the kernels in Pallas interpret mode (CPU).
      arch: block table to use ("sm80", "sm86", "sm90"); default: the local
        GPU's, or small tiles in interpret mode. Tests and cross-lowering pass it.
      config: explicit block sizes (overrides ``arch``), e.g. for tuning.

    Returns:
      [B, T, Hq, D] in q's dtype; exact zeros for queries that see no key.

    Raises:
      NotImplementedError: head_dim above 256 (smaller ones are zero-padded to a
        power of two, >= 64 on a GPU), dtypes other than bfloat16 on a GPU (float32
        too in interpret mode)
        (or mixed), a GPU without a table (kernels/gpu_arch.py), or a jax
        without the Pallas Triton backend.
    """
    d = q.shape[-1]
    if d > 256:
        raise NotImplementedError(f"pallas_triton serves head_dim <= 256; got {d}")
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise NotImplementedError(
            f"pallas_triton serves float32 or bfloat16 q/k/v of one dtype; got "
            f"{q.dtype}, {k.dtype}, {v.dtype}"
        )
    # Triton tiles are powers of two; the GPU tables start at 64 (each entry is
    # compiled and checked), interpret mode's small tiles keep small dims small.
    uses_table = config is None and (arch is not None or not interpret)
    padded_d = max(64 if uses_table else 16, 1 << (d - 1).bit_length())
    if config is None:
        config = resolve_config(padded_d, q.dtype, interpret=bool(interpret), arch=arch)
    if segment_ids is None:
        segment_ids = jnp.ones(q.shape[:2], jnp.int32)
    scale = float(d**-0.5 if scale is None else scale)
    local = functools.partial(_attention_local, window=window, scale=scale,
                              interpret=bool(interpret), config=config, padded_d=padded_d)
    return sharded.per_batch_shard(local, q, k, v, segment_ids)


def _attention_local(q, k, v, segment_ids, *, window, scale: float, interpret: bool,
                     config: BlockConfig, padded_d: int):
    """attention_pallas_triton on one device's arrays (shapes as there)."""
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    groups = hq // hkv
    if padded_d != d:
        # Zero columns change neither q.k nor the kept output columns, and their
        # gradients are sliced away.
        pad = ((0, 0), (0, 0), (0, 0), (0, padded_d - d))
        out = _attention_local(jnp.pad(q, pad), jnp.pad(k, pad), jnp.pad(v, pad), segment_ids,
                               window=window, scale=scale, interpret=interpret, config=config,
                               padded_d=padded_d)
        return out[..., :d]
    if t == 0:
        return jnp.zeros_like(q)

    rows = _round_up(t * groups, config.row_multiple)
    keys = _round_up(t, config.key_multiple)
    k_lo, k_hi, q_lo, q_hi = key_ranges(segment_ids, window, groups=groups, rows=rows, keys=keys)
    # [B, T, Hq, D] -> [B, Hkv, T*G, D]: row r = position r // G, head r % G.
    qf = q.reshape(b, t, hkv, groups, d).transpose(0, 2, 1, 3, 4).reshape(b, hkv, t * groups, d)
    qf = jnp.pad(qf, ((0, 0), (0, 0), (0, rows - t * groups), (0, 0)))
    pad_keys = ((0, 0), (0, keys - t), (0, 0), (0, 0))
    kp, vp = jnp.pad(k, pad_keys), jnp.pad(v, pad_keys)
    out = _flash(qf, kp, vp, k_lo, k_hi, q_lo, q_hi, scale, config, bool(interpret))
    out = out[:, :, : t * groups].reshape(b, hkv, t, groups, d).transpose(0, 2, 1, 3, 4)
    return out.reshape(b, t, hq, d)

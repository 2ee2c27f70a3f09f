"""Blocked attention in plain jax.numpy: the dense reference's contract at a fraction of its work.

``attention_xla`` computes every ``T x T`` score and masks most of them away:
at T = 2048 a layer with window (256, 256) needs ~1/4 of them, and the
``[B, H, T, T]`` float32 score tensor (1.6 GB per layer at B = 32) streams
through memory. This implementation keeps every shape static and still skips
the work:

* **Windowed layers**: the sequence is cut into query blocks of ``block``
  positions. Query block ``i`` can only reach key blocks ``i - nl .. i + nr``
  (``nl = ceil(left / block)``, ``nr = ceil(right / block)``), so each block
  attends to a static slab of ``(nl + 1 + nr) * block`` keys, built from
  shifted static slices of the (zero-padded) key blocks: no gather, no
  ``T x T`` mask. The window mask inside a slab does not depend on ``i``.
* **Full layers** (or windows wider than the sequence): an online softmax over
  key chunks of ``block`` positions under ``lax.scan``; live memory is
  ``O(T * block)``, not ``O(T^2)``. The scan body is rematerialised in the
  backward pass, so gradients also stay ``O(T * block)`` per step.
* **MQA / GQA**: query heads are folded next to the query axis
  (``[B, T, K, G, D]``); K/V are read once per KV head, never repeated.
* **Empty rows**: scores that are not allowed get weight exactly 0 (a
  ``where``, not a large negative number), so a query that sees no key has
  output 0 and gradient 0.

Statistics (max, sum, accumulator) are float32 for every input dtype; float32
matmuls ask for HIGHEST precision so a GPU does not silently use TF32.
Gradients come from plain JAX autodiff.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Default query block of the windowed path and key chunk of the online path:
#: fastest on CPU at T = 2048, window (256, 256) / full (BENCHMARKS.md).
DEFAULT_BLOCK = 128
DEFAULT_CHUNK = 256


def attention_xla_blocked(q, k, v, segment_ids, *, window, scale, block: int | None = None):
    """Masked softmax attention computed block by block.

    Args:
      q: [B, T, Hq, D]. k, v: [B, T, Hkv, D], Hq % Hkv == 0.
      segment_ids: int32 [B, T]; 0 = padding.
      window: None or inclusive (left, right).
      scale: float multiplier on q.k.
      block: block size in positions, for both paths (None: :data:`DEFAULT_BLOCK`
        for windows, :data:`DEFAULT_CHUNK` for full attention; capped at T).

    Returns:
      [B, T, Hq, D] in q's dtype; exact zeros for queries that see no key.
    """
    b, t, hq, d = q.shape
    if t == 0:
        return jnp.zeros_like(q)
    hkv = k.shape[2]
    q = q.reshape(b, t, hkv, hq // hkv, d)  # [B, T, K, G, D]: query head h = k * G + g
    if window is not None:
        size = min(block or DEFAULT_BLOCK, t)
        nl, nr = -(-window[0] // size), -(-window[1] // size)
        if (nl + 1 + nr) * size < t:  # the slab is smaller than the sequence: worth it
            out = _windowed(q, k, v, segment_ids, window, scale, size, nl, nr)
            return out.reshape(b, t, hq, d)
        if window[0] >= t - 1 and window[1] >= t - 1:
            window = None  # the window covers every pair
    block = min(block or DEFAULT_CHUNK, t)
    out = _online(q, k, v, segment_ids, window, scale, block)
    return out.reshape(b, t, hq, d)


def _precision(dtype):
    return jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None


def _pad_axis1(x, before: int, after: int):
    pad = [(0, 0)] * x.ndim
    pad[1] = (before, after)
    return jnp.pad(x, pad)


def _windowed(q, k, v, seg, window, scale, block, nl, nr):
    """Each query block against the static slab of key blocks its window reaches."""
    b, t, hkv, g, d = q.shape
    nq = -(-t // block)
    tail = nq * block - t
    span = nl + 1 + nr  # key blocks per slab
    qb = _pad_axis1(q, 0, tail).reshape(b, nq, block, hkv, g, d)
    seg_q = _pad_axis1(seg, 0, tail).reshape(b, nq, block)

    def slabs(x):
        # [B, T, ...] -> [B, nq, span * block, ...]: key blocks i - nl .. i + nr for block i.
        x = _pad_axis1(x, nl * block, nr * block + tail)
        x = x.reshape(b, nq + span - 1, block, *x.shape[2:])
        x = jnp.stack([x[:, j:j + nq] for j in range(span)], axis=2)
        return x.reshape(b, nq, span * block, *x.shape[4:])

    ks, vs, seg_k = slabs(k), slabs(v), slabs(seg)  # [B, nq, S, K, D], [B, nq, S]
    # Key j of the slab sits at offset (j - nl * block) - a from query a of the block,
    # for every block i: the window mask is one static [block, S] array.
    offset = jnp.arange(span * block)[None, :] - nl * block - jnp.arange(block)[:, None]
    in_window = (offset >= -window[0]) & (offset <= window[1])
    allowed = ((seg_q[:, :, :, None] == seg_k[:, :, None, :]) & (seg_k[:, :, None, :] != 0)
               & in_window)[:, :, None, None]  # [B, nq, 1, 1, block, S]
    precision = _precision(q.dtype)
    scores = jnp.einsum("bnqkgd,bnskd->bnkgqs", qb, ks, precision=precision,
                        preferred_element_type=jnp.float32) * scale  # [B, nq, K, G, block, S]
    scores = jnp.where(allowed, scores, -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    # Shift invariance: the shift carries no gradient; empty rows shift by 0.
    row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
    weights = jnp.where(allowed, jnp.exp(scores - row_max), 0.0)
    denom = jnp.sum(weights, axis=-1, keepdims=True)
    probs = weights / jnp.where(denom > 0, denom, 1.0)
    out = jnp.einsum("bnkgqs,bnskd->bnqkgd", probs.astype(v.dtype), vs, precision=precision,
                     preferred_element_type=jnp.float32)  # [B, nq, block, K, G, D]
    return out.reshape(b, nq * block, hkv, g, d)[:, :t].astype(q.dtype)


def _online(q, k, v, seg, window, scale, block):
    """Online softmax over key chunks: O(T * block) live scores instead of O(T^2)."""
    b, t, hkv, g, d = q.shape
    nk = -(-t // block)
    tail = nk * block - t
    precision = _precision(q.dtype)
    # Key chunks lead so lax.scan walks them: [nk, B, block, ...].
    kc = _pad_axis1(k, 0, tail).reshape(b, nk, block, hkv, d).swapaxes(0, 1)
    vc = _pad_axis1(v, 0, tail).reshape(b, nk, block, hkv, d).swapaxes(0, 1)
    seg_kc = _pad_axis1(seg, 0, tail).reshape(b, nk, block).swapaxes(0, 1)
    starts = jnp.arange(nk) * block
    q_pos = jnp.arange(t)
    seg_q = seg[:, :, None]  # [B, T, 1]

    @jax.checkpoint
    def step(carry, chunk):
        m, total, acc = carry  # [B, K, G, T, 1] x2, [B, K, G, T, D]: float32
        k_c, v_c, seg_c, start = chunk
        allowed = (seg_q == seg_c[:, None, :]) & (seg_c[:, None, :] != 0)  # [B, T, block]
        if window is not None:
            off = (start + jnp.arange(block))[None, :] - q_pos[:, None]  # [T, block] = j - i
            allowed = allowed & ((off >= -window[0]) & (off <= window[1]))[None]
        allowed = allowed[:, None, None]  # [B, 1, 1, T, block]
        s = jnp.einsum("bqkgd,bskd->bkgqs", q, k_c, precision=precision,
                       preferred_element_type=jnp.float32) * scale
        s = jnp.where(allowed, s, -jnp.inf)  # exp(-inf) = 0: no inf reaches autodiff
        m_new = jax.lax.stop_gradient(jnp.maximum(m, jnp.max(s, axis=-1, keepdims=True)))
        p = jnp.exp(s - m_new)  # m_new is finite (m starts finite), so masked p is exactly 0
        correction = jnp.exp(m - m_new)
        total = total * correction + jnp.sum(p, axis=-1, keepdims=True)
        acc = acc * correction + jnp.einsum(
            "bkgqs,bskd->bkgqd", p.astype(v.dtype), v_c, precision=precision,
            preferred_element_type=jnp.float32)
        return (m_new, total, acc), None

    # A finite start for the running max: rows that never see a key keep it, their
    # weights stay exactly 0, and exp(m - m_new) never sees inf - inf.
    m0 = jnp.full((b, hkv, g, t, 1), -0.7 * float(jnp.finfo(jnp.float32).max), jnp.float32)
    zeros = jnp.zeros((b, hkv, g, t, 1), jnp.float32)
    acc0 = jnp.zeros((b, hkv, g, t, d), jnp.float32)
    (_, total, acc), _ = jax.lax.scan(step, (m0, zeros, acc0), (kc, vc, seg_kc, starts))
    out = acc / jnp.where(total > 0, total, 1.0)  # [B, K, G, T, D]
    return out.transpose(0, 3, 1, 2, 4).astype(q.dtype)


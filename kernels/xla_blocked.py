"""Blocked attention in plain jax.numpy: the dense reference's contract at a fraction of its work.

``attention_xla`` computes every ``T x T`` score and masks most of them away:
at T = 2048 a layer with window (256, 256) needs ~1/4 of them, and the
``[B, H, T, T]`` float32 score tensor (1.6 GB per layer at B = 32) streams
through memory. This implementation keeps every shape static and still skips
the work:

* **Query blocks, one at a time.** The sequence is cut into query blocks of
  ``block`` positions, and ``lax.map`` walks them: each step computes the
  block's scores against one static range of keys, an exact softmax and the
  values, so live memory is ``O(block * keys)`` per step, never ``O(T^2)``,
  and a step's scores stay in cache. On the 2-core dev CPU at T = 2048 this
  ran 1.5-2x faster than scoring every query block at once (windowed layers)
  and than an online softmax over key chunks (full layers), the two paths it
  replaced (BENCHMARKS.md, "Attention alone").
* **Windowed layers**: query block ``i`` can only reach key blocks
  ``i - nl .. i + nr`` (``nl = ceil(left / block)``, ``nr = ceil(right /
  block)``), so its key range is a static slab of ``(nl + 1 + nr) * block``
  keys, sliced from the zero-padded keys at ``i * block``.
* **Full layers** (or windows whose slab would cover the sequence): every
  block's key range is the whole sequence.
* **MQA / GQA**: query heads are folded next to the query block
  (``[B, K, G * block, D]``), so one KV head's keys meet all its query heads
  in one matrix product; K/V are never repeated.
* **Normalised after the values**: the unnormalised weights multiply V and
  the ``[.., D]`` result is divided by the row sums (fewer divisions than
  normalising the ``[.., keys]`` weights; the flash-attention order).
* **Empty rows**: scores that are not allowed get weight exactly 0 (a
  ``where``, not a large negative number), so a query that sees no key has
  output 0 and gradient 0.

Statistics (max, sum, accumulator) are float32 for every input dtype; float32
matmuls ask for HIGHEST precision so a GPU does not silently use TF32.
Gradients come from plain JAX autodiff; the step is rematerialised in the
backward pass, so gradients also keep ``O(block * keys)`` live memory per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Default query block: within 4% of the fastest block on the dev CPU at
#: T = 2048, B = 1 and 8, window (256, 256) and full; 512 is up to 2.7x slower
#: on windowed layers (BENCHMARKS.md, "Attention alone", block sweep).
DEFAULT_BLOCK = 128


def attention_xla_blocked(q, k, v, segment_ids, *, window, scale, block: int | None = None):
    """Masked softmax attention computed one query block at a time.

    Args:
      q: [B, T, Hq, D]. k, v: [B, T, Hkv, D], Hq % Hkv == 0.
      segment_ids: int32 [B, T]; 0 = padding.
      window: None or inclusive (left, right).
      scale: float multiplier on q.k.
      block: query block in positions (None: :data:`DEFAULT_BLOCK`; capped at T).

    Returns:
      [B, T, Hq, D] in q's dtype; exact zeros for queries that see no key.
    """
    b, t, hq, d = q.shape
    if t == 0:
        return jnp.zeros_like(q)
    hkv = k.shape[2]
    size = min(block or DEFAULT_BLOCK, t)
    n_blocks = -(-t // size)
    tail = n_blocks * size - t
    if window is not None:
        nl, nr = -(-window[0] // size), -(-window[1] // size)
        if window[0] >= t - 1 and window[1] >= t - 1:
            window = None  # the window covers every pair
    if window is not None and (nl + 1 + nr) * size < t:
        # The slab is smaller than the sequence: block i reads keys (i - nl) * size ... on.
        before, keys, stride = nl * size, (nl + 1 + nr) * size, size
    else:
        before, keys, stride = 0, n_blocks * size, 0  # every block reads the whole sequence
    after = (n_blocks - 1) * stride + keys - before - t  # the last block's range ends in it
    out = _query_blocks(q.reshape(b, t, hkv, hq // hkv, d), k, v, segment_ids, window, scale,
                        size, n_blocks, tail, before, after, keys, stride)
    return out.reshape(b, t, hq, d)


def _precision(dtype):
    return jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None


def _pad_axis1(x, before: int, after: int):
    pad = [(0, 0)] * x.ndim
    pad[1] = (before, after)
    return jnp.pad(x, pad)


def _query_blocks(q, k, v, seg, window, scale, size, n_blocks, tail, before, after, keys,
                  stride):
    """``lax.map`` over query blocks; block i scores keys ``[i * stride - before, + keys)``.

    q: [B, T, K, G, D]; k, v: [B, T, K, D]. Keys are zero-padded by ``before`` /
    ``after`` (padding has segment 0, so it is never allowed). Returns [B, T, K, G, D].
    """
    b, t, hkv, g, d = q.shape
    precision = _precision(q.dtype)
    # Query blocks lead so lax.map walks them: [n, B, K, G * size, D], row = g * size + a.
    q_blocks = (_pad_axis1(q, 0, tail).reshape(b, n_blocks, size, hkv, g, d)
                .transpose(1, 0, 3, 4, 2, 5).reshape(n_blocks, b, hkv, g * size, d))
    seg_blocks = _pad_axis1(seg, 0, tail).reshape(b, n_blocks, size).swapaxes(0, 1)
    k_all = _pad_axis1(k, before, after).transpose(0, 2, 1, 3)  # [B, K, Tk, D]
    v_all = _pad_axis1(v, before, after).transpose(0, 2, 1, 3)
    seg_all = _pad_axis1(seg, before, after)  # [B, Tk]

    @jax.checkpoint
    def one_block(args):
        i, q_i, seg_i = args  # [], [B, K, G * size, D], [B, size]
        start = i * stride
        k_i = jax.lax.dynamic_slice_in_dim(k_all, start, keys, axis=2)  # [B, K, keys, D]
        v_i = jax.lax.dynamic_slice_in_dim(v_all, start, keys, axis=2)
        seg_k = jax.lax.dynamic_slice_in_dim(seg_all, start, keys, axis=1)  # [B, keys]
        allowed = (seg_i[:, :, None] == seg_k[:, None, :]) & (seg_k[:, None, :] != 0)
        if window is not None:  # key position - query position, [size, keys]
            offset = ((start - before + jnp.arange(keys))[None, :]
                      - (i * size + jnp.arange(size))[:, None])
            allowed = allowed & ((offset >= -window[0]) & (offset <= window[1]))[None]
        allowed = jnp.tile(allowed, (1, g, 1))[:, None]  # [B, 1, G * size, keys]
        s = jnp.einsum("bkmd,bksd->bkms", q_i, k_i, precision=precision,
                       preferred_element_type=jnp.float32) * scale
        s = jnp.where(allowed, s, -jnp.inf)
        row_max = jnp.max(s, axis=-1, keepdims=True)
        # Shift invariance: the shift carries no gradient; empty rows shift by 0.
        row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
        weights = jnp.where(allowed, jnp.exp(s - row_max), 0.0)
        total = jnp.sum(weights, axis=-1, keepdims=True)  # [B, K, G * size, 1]
        out = jnp.einsum("bkms,bksd->bkmd", weights.astype(v.dtype), v_i, precision=precision,
                         preferred_element_type=jnp.float32)
        return out / jnp.where(total > 0, total, 1.0)

    out = jax.lax.map(one_block, (jnp.arange(n_blocks), q_blocks, seg_blocks))
    out = out.reshape(n_blocks, b, hkv, g, size, d).transpose(1, 0, 4, 2, 3, 5)
    return out.reshape(b, n_blocks * size, hkv, g, d)[:, :t].astype(q.dtype)

"""Reference attention in plain jax.numpy: runs everywhere, differentiable by autodiff.

Scores are O(T^2) in memory; that is fine for CPU tests, inference at modest
lengths and as the oracle the Pallas kernels are checked against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tarka_jax.kernels.mask import allowed_pairs


def attention_xla(q, k, v, segment_ids, *, window, scale):
    """Masked softmax attention with grouped K/V heads.

    Args:
      q: [B, T, Hq, D]. k, v: [B, T, Hkv, D], Hq % Hkv == 0.
      segment_ids: int32 [B, T]; 0 = padding.
      window: None or inclusive (left, right).
      scale: float multiplier on q.k.

    Returns:
      [B, T, Hq, D] in q's dtype. A query with no allowed key gets exact zeros
      (and zero gradients), never NaN.
    """
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    groups = hq // hkv
    # float32 inputs must not silently run as TF32 on GPU: ask for full precision.
    precision = jax.lax.Precision.HIGHEST if q.dtype == jnp.float32 else None
    q = q.reshape(b, t, hkv, groups, d)  # [B, T, K, G, D]: query head h = k * G + g
    scores = jnp.einsum(
        "bqkgd,bskd->bkgqs", q, k, precision=precision, preferred_element_type=jnp.float32
    )  # [B, K, G, Tq, Tk]
    scores = scores * scale
    allowed = allowed_pairs(segment_ids, window)[:, None, None]  # [B, 1, 1, Tq, Tk]
    scores = jnp.where(allowed, scores, -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    # Softmax is shift-invariant, so the shift carries no gradient; empty rows
    # (max = -inf) shift by 0 to avoid inf - inf.
    row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
    weights = jnp.where(allowed, jnp.exp(scores - row_max), 0.0)
    denom = jnp.sum(weights, axis=-1, keepdims=True)
    probs = weights / jnp.where(denom > 0, denom, 1.0)  # empty rows stay 0
    out = jnp.einsum(
        "bkgqs,bskd->bqkgd", probs.astype(v.dtype), v, precision=precision,
        preferred_element_type=jnp.float32,
    )  # [B, Tq, K, G, D]
    return out.reshape(b, t, hq, d).astype(q.dtype)

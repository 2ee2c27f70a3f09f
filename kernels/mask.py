"""Which (query, key) pairs may attend: the one definition every implementation follows.

Token ``i`` sees token ``j`` iff ``seg[i] == seg[j] != 0`` and, when a window
``(left, right)`` is given, ``-left <= j - i <= right`` (both bounds inclusive).
Segment 0 marks padding; segments are contiguous runs, as padding and packing
produce them.
"""

from __future__ import annotations

import jax.numpy as jnp


def allowed_pairs(segment_ids, window=None):
    """Boolean mask of allowed pairs.

    Args:
      segment_ids: int32 [B, T].
      window: None or (left, right), inclusive.

    Returns:
      bool [B, T, T] indexed [batch, query, key]. XLA fuses the comparisons
      into the score computation, so no mask is read from memory.
    """
    seg_q = segment_ids[:, :, None]  # [B, T, 1]
    seg_k = segment_ids[:, None, :]  # [B, 1, T]
    allowed = (seg_q == seg_k) & (seg_k != 0)
    if window is not None:
        left, right = window
        t = segment_ids.shape[1]
        offset = jnp.arange(t)[None, :] - jnp.arange(t)[:, None]  # [Tq, Tk] = j - i
        allowed = allowed & ((offset >= -left) & (offset <= right))[None]
    return allowed

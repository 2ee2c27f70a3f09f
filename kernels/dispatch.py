"""The single attention entry point and the choice between implementations.

The model calls :func:`attention` and nothing else; which kernel runs is data
(``implementation=``), never a branch inside model code.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from tarka_jax.kernels.xla import attention_xla



def _pallas_triton(q, k, v, segment_ids, *, window, scale, interpret):
    # Imported lazily: Pallas imports are slow and only GPU/interpret users pay them.
    from tarka_jax.kernels.pallas_triton import attention_pallas_triton

    return attention_pallas_triton(
        q, k, v, segment_ids, window=window, scale=scale, interpret=interpret
    )


def _xla(q, k, v, segment_ids, *, window, scale, interpret):
    del interpret  # not a Pallas kernel
    return attention_xla(q, k, v, segment_ids, window=window, scale=scale)


#: name -> callable(q, k, v, segment_ids, *, window, scale, interpret)
IMPLEMENTATIONS: dict[str, Callable] = {"xla": _xla, "pallas_triton": _pallas_triton}

#: Preference order per platform for ``implementation=None``; first one that can
#: serve the input wins. Chosen from measurements recorded in BENCHMARKS.md.
#: GPU: xla for now. pallas_triton (block skipping, O(T) memory) is tested in
#: interpret mode and cross-lowered for sm80/sm90, but has not yet been compiled
#: or timed on real hardware (BENCHMARKS.md); a Triton compile failure would be
#: an error, not a NotImplementedError fallback. Put it first once
#: benchmarks/gpu_check.sh has shown it correct and faster; until then ask for it
#: with implementation="pallas_triton". CPU: xla (Pallas interpret mode is for tests).
_PREFERRED = {"gpu": ("xla",), "cuda": ("xla",)}
_DEFAULT_ORDER = ("xla",)


def available_implementations() -> tuple[str, ...]:
    return tuple(IMPLEMENTATIONS)


def _check_inputs(q, k, v, segment_ids, window):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"attention expects q, k, v of rank 4 [B, T, H, D]; got {q.shape}, {k.shape}, {v.shape}"
        )
    b, t, hq, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[1] != t or k.shape[3] != d:
        raise ValueError(
            f"k and v must be [B, T, Hkv, D] matching q {q.shape}; got {k.shape}, {v.shape}"
        )
    if hq % k.shape[2]:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({k.shape[2]})")
    if segment_ids is not None and segment_ids.shape != (b, t):
        raise ValueError(f"segment_ids must be [B, T] = {(b, t)}; got {segment_ids.shape}")
    if window is not None:
        if len(window) != 2 or min(window) < 0:
            raise ValueError(f"window must be None or (left, right) with both >= 0; got {window}")
    if q.dtype == jnp.float16:
        raise ValueError(
            "float16 is not supported: Gemma 3 activations overflow it; use bfloat16 or float32"
        )


def attention(q, k, v, segment_ids=None, *, window=None, scale=None, implementation=None,
              interpret=None):
    """Bidirectional attention with segments and an optional window.

    Args:
      q: [B, T, Hq, D]; k, v: [B, T, Hkv, D] with Hq % Hkv == 0 (MQA/GQA: query
        head h reads K/V head h // (Hq // Hkv)).
      segment_ids: int32 [B, T] or None (one segment, no padding). Token i sees
        token j iff seg[i] == seg[j] != 0 and the window allows it. Segments are
        contiguous runs; 0 marks padding.
      window: None (full) or (left, right), inclusive: -left <= j - i <= right.
        Example: HF's serialised sliding_window 512 is (256, 256) here.
      scale: multiplier on q.k; None means D ** -0.5.
      implementation: "xla", "pallas_triton" or None (best measured for the
        platform that can serve the input). An explicit request that cannot
        run raises; there is no silent fallback.
      interpret: Pallas interpret mode; None means True exactly on CPU.

    Returns:
      [B, T, Hq, D] in q's dtype. Queries that see no key give exact zeros.
    """
    _check_inputs(q, k, v, segment_ids, window)
    if segment_ids is None:
        segment_ids = jnp.ones(q.shape[:2], jnp.int32)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    window = None if window is None else (int(window[0]), int(window[1]))
    platform = jax.default_backend()
    if interpret is None:
        interpret = platform == "cpu"
    kwargs = dict(window=window, scale=float(scale), interpret=interpret)
    if implementation is not None:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"unknown attention implementation {implementation!r}; "
                f"choose from {sorted(IMPLEMENTATIONS)} or None"
            )
        return IMPLEMENTATIONS[implementation](q, k, v, segment_ids, **kwargs)
    for name in _PREFERRED.get(platform, _DEFAULT_ORDER):
        try:
            return IMPLEMENTATIONS[name](q, k, v, segment_ids, **kwargs)
        except NotImplementedError:
            continue
    raise NotImplementedError(f"no attention implementation can serve this input on {platform}")

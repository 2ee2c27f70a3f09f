"""Shared by the GPU attention benchmark scripts: layer cases, segment layouts, FLOP counts.

Imports only numpy, so the JAX and the PyTorch scripts measure the same inputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layer:
    """One attention layer shape: B x T tokens, Hq query heads sharing Hkv K/V heads."""

    name: str
    b: int
    t: int
    hq: int
    hkv: int
    d: int
    window: tuple[int, int] | None  # inclusive (left, right); None = full
    padded: bool  # ragged lengths (padding) instead of full rows

    def as_dict(self):
        return dataclasses.asdict(self)


def layers(dry_run: bool) -> list[Layer]:
    """Our model's shapes (MQA 3:1, head_dim 256, T = 2048, window (256, 256)), or tiny ones."""
    if dry_run:
        b, t, d, w = 2, 40, 32, (6, 6)
    else:
        b, t, d, w = 32, 2048, 256, (256, 256)
    # e.g. LAYERS=window,full to run a subset; the dry run checks the plumbing on one.
    only = os.environ.get("LAYERS") or ("window_padded" if dry_run else None)
    out = [
        Layer("full", b, t, 3, 1, d, None, False),
        Layer("window", b, t, 3, 1, d, w, False),
        Layer("full_padded", b, t, 3, 1, d, None, True),
        Layer("window_padded", b, t, 3, 1, d, w, True),
    ]
    return [x for x in out if not only or x.name in only.split(",")]


def segment_ids(layer: Layer) -> np.ndarray:
    """int32 [B, T]: 1 on tokens, 0 on padding; padded layers have lengths in [T/4, T]."""
    seg = np.ones((layer.b, layer.t), np.int32)
    if layer.padded:
        rng = np.random.default_rng(0)
        lengths = rng.integers(layer.t // 4, layer.t + 1, size=layer.b)
        lengths[0] = layer.t
        seg[np.arange(layer.t)[None, :] >= lengths[:, None]] = 0
    return seg


def dense_mask(layer: Layer, seg: np.ndarray) -> np.ndarray:
    """bool [B, T, T]: the allowed (query, key) pairs (baselines that need a dense mask)."""
    allowed = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)
    if layer.window is not None:
        offset = np.arange(layer.t)[None, :] - np.arange(layer.t)[:, None]
        allowed &= (offset >= -layer.window[0]) & (offset <= layer.window[1])
    return allowed


def allowed_pairs(layer: Layer, seg: np.ndarray) -> int:
    """Allowed (query, key) pairs over the batch, per head (no dense mask needed)."""
    total = 0
    for row in seg:
        length = int((row != 0).sum())  # one segment per row here
        i = np.arange(length)
        if layer.window is None:
            total += length * length
        else:
            lo = np.maximum(i - layer.window[0], 0)
            hi = np.minimum(i + layer.window[1] + 1, length)
            total += int((hi - lo).sum())
    return total


def flops(layer: Layer, seg: np.ndarray, backward: bool) -> float:
    """forward = 4 * Hq * D * allowed pairs; forward + backward ~ 3.5x that."""
    fwd = 4.0 * layer.hq * layer.d * allowed_pairs(layer, seg)
    return fwd * 3.5 if backward else fwd


def time_calls(call, sync, *, min_iters: int = 3, min_seconds: float = 0.2, repeats: int = 3,
               quick: bool = False):
    """Seconds per call: warm up, then the best of ``repeats`` timed batches (quick: one call)."""
    sync(call())  # compile / warm up
    if quick:
        start = time.perf_counter()
        sync(call())
        return max(time.perf_counter() - start, 1e-9)
    sync(call())
    start = time.perf_counter()
    sync(call())
    one = max(time.perf_counter() - start, 1e-6)
    iters = max(min_iters, int(min_seconds / one))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            out = call()
        sync(out)
        best = min(best, (time.perf_counter() - start) / iters)
    return best


def write_json(path: str, payload) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 400 else text[:400] + " ..."

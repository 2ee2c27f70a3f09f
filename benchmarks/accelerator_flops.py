"""FLOPs of the compiled programs, counted from the model's shapes (no compiler involved).

Why count: XLA's ``cost_analysis()`` is no measure of these programs. It counts a
``while`` loop's body once (``xla_blocked`` walks 16 query blocks in a ``lax.map``:
its attention shows 1/16 of its work), counts a Pallas kernel as 0 FLOPs
(``splash_tpu``, ``pallas_triton``), and on GPU (jax 0.10.2) returns nothing. So:

* **useful FLOPs** (the MFU numerator, as benchmarks/gpu_train_mfu.py): 2 x params
  per token for the matmuls (non-embedding; the Dense head per text), and 4 Hq D per
  (query, key) pair the window allows, rows taken whole; forward x1, training x3.
* **executed FLOPs**: the same matmuls, plus the attention each implementation
  really computes: ``xla`` every T^2 pair; ``xla_blocked`` each 128-query block
  against its static key slab (forward + a recomputed forward + 4 backward products
  under ``jax.checkpoint``: 4x the forward); ``splash_tpu`` every (128, 128) tile
  its static mask touches (forward 2 products; backward dq 3 + dkv 4: 4.5x);
  ``pallas_triton`` the tiles its fwd table touches, window-bounded (it also skips
  tiles outside a packed text's segment, which shapes alone cannot count: an
  upper bound; backward as splash). Dense autodiff (``xla``): 3x the forward.
"""

from __future__ import annotations

import numpy as np

BACKWARD_FACTOR = {"xla": 3.0, "xla_blocked": 4.0, "splash_tpu": 4.5, "pallas_triton": 4.5}
SPLASH_BLOCK = 128  # kernels/splash_tpu.BLOCK
BLOCKED_BLOCK = 128  # kernels/xla_blocked.DEFAULT_BLOCK


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def allowed_pairs(t: int, window) -> int:
    """(query, key) pairs of one row of T tokens the window allows (one segment)."""
    if window is None:
        return t * t
    i = np.arange(t)
    lo, hi = np.maximum(i - window[0], 0), np.minimum(i + window[1] + 1, t)
    return int((hi - lo).sum())


def tiled_pairs(t: int, window, block_q: int, block_k: int) -> int:
    """Pairs computed by a kernel that runs every (block_q, block_k) tile the window touches."""
    tq, tk = _ceil(t, block_q), _ceil(t, block_k)
    if window is None:
        return tq * block_q * tk * block_k
    total = 0
    for i in range(tq):
        first = max(0, i * block_q - window[0]) // block_k
        last = min(tk * block_k - 1, i * block_q + block_q - 1 + window[1]) // block_k
        total += (last - first + 1) * block_k * block_q
    return total


def blocked_pairs(t: int, window, block: int = BLOCKED_BLOCK) -> int:
    """Pairs xla_blocked computes: each query block against its static key slab."""
    size = min(block, t)
    n = _ceil(t, size)
    if window is not None and not (window[0] >= t - 1 and window[1] >= t - 1):
        keys = (_ceil(window[0], size) + 1 + _ceil(window[1], size)) * size
        if keys < t:
            return n * size * keys
    return (n * size) ** 2


def executed_pairs(impl: str, t: int, window, groups: int, pallas_blocks=(64, 32)) -> int:
    if impl == "xla":
        return t * t
    if impl == "xla_blocked":
        return blocked_pairs(t, window)
    if impl == "splash_tpu":
        return tiled_pairs(t, window, SPLASH_BLOCK, SPLASH_BLOCK)
    if impl == "pallas_triton":  # folded rows: a row block of block_q holds block_q / G positions
        return tiled_pairs(t, window, max(1, pallas_blocks[0] // groups), pallas_blocks[1])
    raise ValueError(impl)


def matmul_params(config) -> tuple[int, int]:
    """(per-token matmul params of the encoder, params of the Dense head)."""
    e, f = config.hidden_size, config.intermediate_size
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    per_layer = e * (2 * q + 2 * kv) + 3 * e * f
    dense = sum(d.in_features * d.out_features for d in config.dense)
    return per_layer * config.num_layers, dense


def forward_flops(config, rows: int, width: int, texts: int, impl: str,
                  pallas_blocks=(64, 32)) -> dict:
    """{"useful", "executed", "attention_executed"} FLOPs of one forward over rows x width."""
    n_tok, n_dense = matmul_params(config)
    dense = 2.0 * n_tok * rows * width + 2.0 * n_dense * texts
    per_pair = 4.0 * config.num_heads * config.head_dim * rows
    groups = config.num_heads // config.num_kv_heads
    useful = executed = 0.0
    for layer in range(config.num_layers):
        window = config.window_for(layer)
        useful += per_pair * allowed_pairs(width, window)
        executed += per_pair * executed_pairs(impl, width, window, groups, pallas_blocks)
    return {"useful": dense + useful, "executed": dense + executed,
            "attention_executed": executed, "dense": dense, "attention_useful": useful}


def training_flops(fwd: dict, impl: str, *, grad: bool = True, extra_forwards: int = 0) -> dict:
    """A forward's counts scaled to a training use: forward (+ backward) (+ recomputed forwards).

    ``grad``: parameters get gradients (useful x3, executed dense x3, attention x the
    implementation's backward factor); ``extra_forwards``: forwards without gradient
    that the method adds (GradCache's first pass), executed only.
    """
    if not grad:
        return {"useful": fwd["useful"], "executed": fwd["executed"]}
    executed = (3.0 * fwd["dense"] + BACKWARD_FACTOR[impl] * fwd["attention_executed"]
                + extra_forwards * fwd["executed"])
    return {"useful": 3.0 * fwd["useful"], "executed": executed}

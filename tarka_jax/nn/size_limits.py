"""Ceilings on a model config's sizes, checked before anything is allocated or looped over.

A config.json is input like any other: ``num_hidden_layers: 1000000`` used to cost
minutes and 8 GB before failing against the weights, ``num_attention_heads: 0`` a
ZeroDivisionError, ``max_position_embeddings: 10**12`` a bucket table of 10**10 entries.
:func:`check_sizes` refuses such values with one line naming the key.

The ceilings admit every real Gemma-3-family encoder with room to spare. The largest
member, Gemma 3 27B (transformers' ``Gemma3TextConfig``), has hidden 5,376,
intermediate 21,504, 62 layers, 32 heads, 16 KV heads, head_dim 128, 262,208 tokens
(EmbeddingGemma: 262,144) and 131,072 positions; each ceiling is 8x or more of that,
and bounds the work a config alone can cause: a layer loop of at most 1,024, a
row-length table of at most 16k widths.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from tarka_jax.errors import ConfigError

#: config.json key -> (lowest, highest) accepted.
LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1 << 21),                 # 2,097,152: 8x Gemma 3's
    "hidden_size": (1, 1 << 16),                # 65,536: 12x Gemma 3 27B
    "intermediate_size": (1, 1 << 18),          # 262,144: 12x
    "num_hidden_layers": (1, 1024),             # 16x
    "num_attention_heads": (1, 1024),           # 32x
    "num_key_value_heads": (1, 1024),
    "head_dim": (1, 4096),                      # 16x EmbeddingGemma's 256
    "max_position_embeddings": (1, 1 << 20),    # 1,048,576: 8x Gemma 3's 131,072
    "sliding_window": (1, 1 << 20),
    "sliding_window_pattern": (1, 1024),
    "in_features": (1, 1 << 18),                # a sentence-transformers Dense layer's widths
    "out_features": (1, 1 << 18),
}


def size(value: Any, key: str, source: str = "config.json") -> int:
    """``value`` as an int within ``LIMITS[key]``: Python / numpy ints and integral floats
    (JSON writers differ), never bools, strings or fractions."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 62:
        value = int(value)
    n = _integer(value)
    if n is None:
        raise ConfigError(f"{source}: {key} is malformed: an integer is needed, got "
                          f"{value!r:.60}")
    lo, hi = LIMITS[key]
    if not lo <= n <= hi:
        raise ConfigError(f"{source}: {key} = {n} is outside {lo:,}..{hi:,} (the ceiling is "
                          "8x or more of the largest Gemma 3 model's)")
    return n


def positive(value: Any, key: str, source: str = "config.json", *, zero: bool = False) -> float:
    """``value`` as a finite float > 0 (``zero``: >= 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{source}: {key} is malformed: a number is needed, got "
                          f"{value!r:.60}")
    x = float(value)
    if not math.isfinite(x) or x < 0 or (x == 0 and not zero):
        raise ConfigError(f"{source}: {key} must be a finite number {'>=' if zero else '>'} 0, "
                          f"got {value!r:.60}")
    return x


def _integer(value: Any) -> int | None:
    """A Python or numpy integer (never a bool) as an int, else None."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    return operator.index(value)


def check_sizes(config, source: str = "model config") -> None:
    """Every size and scale of a ModelConfig within its ceiling (see the module docstring)."""
    for field, key in (("vocab_size", "vocab_size"), ("hidden_size", "hidden_size"),
                       ("intermediate_size", "intermediate_size"),
                       ("num_layers", "num_hidden_layers"), ("num_heads", "num_attention_heads"),
                       ("num_kv_heads", "num_key_value_heads"), ("head_dim", "head_dim"),
                       ("max_position_embeddings", "max_position_embeddings")):
        size(getattr(config, field), key, source)
    if config.sliding_window is not None:
        size(config.sliding_window, "sliding_window", source)
    for field in ("query_pre_attn_scalar", "rope_theta_full", "rope_theta_sliding",
                  "rope_scaling_full", "rope_scaling_sliding"):
        positive(getattr(config, field), field, source)
    positive(config.rms_norm_eps, "rms_norm_eps", source, zero=True)
    pad = _integer(config.pad_token_id)
    if pad is None or not 0 <= pad < config.vocab_size:
        raise ConfigError(f"{source}: pad_token_id must be a token id in 0..{config.vocab_size - 1}"
                          f", got {config.pad_token_id!r:.60}")
    for i, spec in enumerate(config.dense):
        size(spec.in_features, "in_features", f"{source}: Dense module {i}")
        size(spec.out_features, "out_features", f"{source}: Dense module {i}")


__all__ = ["LIMITS", "check_sizes", "positive", "size"]

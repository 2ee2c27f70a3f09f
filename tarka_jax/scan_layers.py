"""The encoder with its layers under ``lax.scan``: one compiled layer period instead of 24 layers.

Compile time of the unrolled model grows with the layer count (every new
input shape recompiles all 24 layers). Gemma-style stacks repeat a short
pattern (Tarka: 5 sliding + 1 full), and a layer's static configuration
(window, RoPE) depends only on its type, so the stack is ``num_layers /
period`` repetitions of one period, and each period is runs of one layer type.
:func:`encoder_scanned` stacks the ``layers_{i}`` parameters *inside* the
traced function (the public and on-disk tree stays ``layers_{i}``) and runs a
scan over the periods with an inner scan per run: XLA compiles one layer body
per run (Tarka: 2), not 24 layers.

Not yet wired into :mod:`tarka_jax.model` (see docs for the plan); tested for
equality with the unrolled encoder.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from tarka_jax.config import ModelConfig
from tarka_jax.model import DecoderLayer, RMSNorm
from tarka_jax.numerics import resolve_dtype


def layer_period(config: ModelConfig) -> int:
    """Smallest p dividing num_layers with layer_types[i] == layer_types[i % p] for all i."""
    types, n = config.layer_types, config.num_layers
    for p in range(1, n + 1):
        if n % p == 0 and all(types[i] == types[i % p] for i in range(n)):
            return p
    return n


def encoder_scanned(encoder_params, input_ids, segment_ids, positions, config: ModelConfig, *,
                    dtype="float32", attention=None):
    """Same as ``Encoder(config, dtype, attention).apply(...)``: hidden states [B, T, E]."""
    dtype = resolve_dtype(dtype)
    period = layer_period(config)
    repeats = config.num_layers // period
    embed = nn.Embed(config.vocab_size, config.hidden_size, dtype=dtype, param_dtype=jnp.float32)
    x = embed.apply({"params": encoder_params["embed_tokens"]}, input_ids).astype(dtype)
    x = x * jnp.asarray(math.sqrt(config.hidden_size), jnp.float32).astype(dtype)
    # Within a period, consecutive layers of one type (Tarka: 5 sliding, then 1 full)
    # share their static config too: each run is an inner scan, so XLA compiles one
    # layer body per run, not one per layer.
    runs = _runs(config.layer_types[:period])
    stacked = []  # per run: params [repeats, run_length, ...]
    for start, length in runs:
        per_layer = [[encoder_params[f"layers_{r * period + start + j}"] for j in range(length)]
                     for r in range(repeats)]
        shape = (repeats, length)
        stacked.append(jax.tree.map(lambda *xs, shape=shape: jnp.stack(xs).reshape(
            *shape, *xs[0].shape), *[p for row in per_layer for p in row]))
    layers = [DecoderLayer(config, config.layer(start), dtype, attention) for start, _ in runs]

    def one_period(x, params):
        for layer, run_params in zip(layers, params):
            def one_layer(x, p, layer=layer):
                return layer.apply({"params": p}, x, segment_ids, positions), None
            x, _ = jax.lax.scan(one_layer, x, run_params)
        return x, None

    x, _ = jax.lax.scan(one_period, x, tuple(stacked))
    return RMSNorm(config.rms_norm_eps).apply({"params": encoder_params["norm"]}, x)


def _runs(types) -> list[tuple[int, int]]:
    """(start, length) of each run of equal consecutive layer types."""
    runs: list[tuple[int, int]] = []
    for i, kind in enumerate(types):
        if runs and types[runs[-1][0]] == kind:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs

"""A repeating layer stack under ``lax.scan``: one compiled body per layer type, not 24.

Every new input shape retraces and recompiles the unrolled 24 layers.
Gemma-style stacks repeat a short pattern (Tarka: 5 sliding + 1 full), and a
layer's static configuration (window, RoPE) depends only on its type, so the
stack is ``num_layers / period`` repetitions of one period, and each period is
runs of one layer type. (Measured on XLA:CPU, jax 0.10.2, scanning saves tracing
time, not XLA compile time, and costs a weight copy per call, so it is off by
default: docs/compile.md.)
:func:`stack_runs` stacks the ``layers_{i}`` parameters *inside* the traced
function (the public and on-disk tree stays ``layers_{i}``; the stack is a
copy of the layer weights per call) and :func:`scan_runs` runs a scan over the
periods with an inner scan per run, so XLA compiles one layer body per run
(Tarka: 2). :class:`tarka_jax.nn.encoder.Encoder` uses both when built with
``scan_layers=True``.

This module knows nothing of the layer itself: a body is any
``(x, layer_params) -> x``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from tarka_jax.nn.config import ModelConfig

__all__ = ["layer_period", "layer_runs", "stack_runs", "scan_runs"]


def layer_period(config: ModelConfig) -> int:
    """Smallest p dividing num_layers with layer(i) == layer(i % p) for all i.

    Compares the whole :class:`~tarka_jax.nn.config.LayerSpec` (type, window, RoPE),
    so layers that share a scan body share every static setting.
    """
    specs, n = [config.layer(i) for i in range(config.num_layers)], config.num_layers
    for p in range(1, n + 1):
        if n % p == 0 and all(specs[i] == specs[i % p] for i in range(n)):
            return p
    return n


def layer_runs(config: ModelConfig) -> list[tuple[int, int]]:
    """(start, length) of each run of equal consecutive layer specs within one period."""
    types = [config.layer(i) for i in range(layer_period(config))]
    runs: list[tuple[int, int]] = []
    for i, kind in enumerate(types):
        if runs and types[runs[-1][0]] == kind:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def stack_runs(encoder_params, config: ModelConfig) -> tuple:
    """Per run of :func:`layer_runs`: its ``layers_{i}`` stacked to ``[repeats, length, ...]``.

    A copy of the weights (~400 MB at full size in float32), made on every call.
    """
    period = layer_period(config)
    repeats = config.num_layers // period
    stacked = []
    for start, length in layer_runs(config):
        trees = [encoder_params[f"layers_{r * period + start + j}"]
                 for r in range(repeats) for j in range(length)]
        stacked.append(jax.tree.map(  # leaf [*shape] -> [repeats, length, *shape]
            lambda *xs, n=length: jnp.stack(xs).reshape(repeats, n, *xs[0].shape), *trees))
    return tuple(stacked)


def scan_runs(x, stacked: Sequence, bodies: Sequence[Callable]):
    """Apply the stacked layers in order: ``bodies[r](x, params) -> x`` is run r's layer.

    ``stacked`` is :func:`stack_runs`' output; the outer scan walks the periods,
    an inner scan per run walks its layers, so each body is traced and compiled once.
    """
    def one_period(x, params):
        for body, run_params in zip(bodies, params):
            x, _ = jax.lax.scan(lambda x, p, body=body: (body(x, p), None), x, run_params)
        return x, None

    x, _ = jax.lax.scan(one_period, x, tuple(stacked))
    return x

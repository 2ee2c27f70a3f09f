"""Student surgery used by the loop and the recipes: a new output width, fresh layers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from tarka_jax.errors import TarkaError
from tarka_jax.nn.config import DenseSpec
from tarka_jax.nn.encoder import init_params


def resize_output(config, params, output_dim: int, seed: int = 0):
    """``(config, params)`` with the last Dense layer replaced by a random ``[in, output_dim]`` one.

    No Dense layer at all: one ``hidden -> output_dim`` is appended. The new
    kernel is normal with std ``in ** -0.5`` (unit-variance outputs); when the
    width already matches, nothing changes. Used to distil from a teacher of
    another width (a cache of a sentence-transformers model).
    """
    if output_dim <= 0 or output_dim == config.embedding_dim:
        return config, params
    dense = list(config.dense)
    if dense:
        last = dense[-1]
        dense[-1] = dataclasses.replace(last, out_features=int(output_dim), bias=False)
        index, fan_in = len(dense) - 1, last.in_features
    else:
        dense.append(DenseSpec(config.hidden_size, int(output_dim)))
        index, fan_in = 0, config.hidden_size
    rng = np.random.default_rng([int(seed), 0xD5E])
    params = dict(params)
    params[f"dense_{index}"] = {"kernel": (rng.standard_normal((fan_in, int(output_dim)),
                                                               dtype=np.float32)
                                           * fan_in ** -0.5)}
    return config.replace(dense=tuple(dense)), params


def reinit_layers(config, params, layers: Sequence[int], seed: int = 0):
    """Params with the listed encoder layers drawn fresh (flax init; norm offsets zero)."""
    if not layers:
        return params
    bad = [i for i in layers if not 0 <= i < config.num_layers]
    if bad:
        raise TarkaError(f"reinit layers {bad} out of range 0..{config.num_layers - 1}")
    small = config.replace(vocab_size=8)  # only the layers are kept
    fresh = jax.device_get(init_params(small, jax.random.key(seed)))
    encoder = dict(params["encoder"])
    for i in layers:
        encoder[f"layers_{i}"] = jax.tree.map(lambda x: np.asarray(x, np.float32),
                                              fresh["encoder"][f"layers_{i}"])
    return {**params, "encoder": encoder}

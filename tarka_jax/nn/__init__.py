"""The model: configuration, the bidirectional Gemma 3 encoder + embedding head, numerics, sharding axes.

* :mod:`~tarka_jax.nn.config` -- :class:`ModelConfig` (one frozen dataclass, HF config round trip),
  :class:`LayerSpec` (a layer's window and rotary), :class:`DenseSpec`;
* :mod:`~tarka_jax.nn.encoder` -- the Flax modules and the pure functions :func:`embed`,
  :func:`token_embeddings`, :func:`init_params`;
* :mod:`~tarka_jax.nn.numerics` -- compute dtypes (float16 refused), matmul precision, L2 normalisation;
* :mod:`~tarka_jax.nn.sharding_rules` -- logical axes of every parameter and the rules table that maps
  them to mesh axes;
* :mod:`~tarka_jax.nn.scan_layers` -- the repeating layer pattern under ``lax.scan`` (opt-in).

Imports only :mod:`tarka_jax.kernels` and the bottom layers; nothing here reads a file format.
"""

from tarka_jax.nn.config import ConfigError, DenseSpec, LayerSpec, ModelConfig
from tarka_jax.nn.encoder import embed, init_params, token_embeddings

__all__ = ["ConfigError", "DenseSpec", "LayerSpec", "ModelConfig", "embed", "init_params",
           "token_embeddings"]

"""Logical axis names of the parameters and the one rules table that maps them to mesh axes.

The model never names a mesh axis. Each parameter gets *logical* axis names from
its path (``PARAM_AXES``: the model keeps its HF-mirroring tree untouched), and
``RULES`` maps logical names to mesh axes, as maxtext's ``logical_axis_rules``
and flax's ``nn.logical_to_mesh_axes`` do. Pure FSDP shards the ``embed`` axis
of every matrix over ``fsdp`` (the embedding table: its vocabulary rows); ``data`` only
splits the batch. To try another
layout change ``RULES``, nothing else.

It lives in the core layer because both the distillation loop
(:mod:`tarka_jax.train.sharding`, which builds its meshes) and the inference
:class:`~tarka_jax.Embedder` (:mod:`tarka_jax.inference.placement`) shard params with it.

A dim that the mesh axis does not divide (tiny test models, 3 heads on 2 chips)
is replicated instead, and :func:`param_specs` reports it, so a layout never
fails to compile on odd sizes.
"""

from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tarka_jax.errors import TarkaError

MESH_AXES = ("data", "fsdp")

#: logical axis name -> mesh axis (or None = replicated). The single table.
RULES: dict[str, str | None] = {
    "batch": ("data", "fsdp"),  # activations: the global batch splits over every chip
    "embed": "fsdp",
    # The embedding table splits by rows: split on its hidden dim, the lookup's output came out
    # hidden-sharded and XLA kept that layout through every layer (the whole global batch on
    # every chip, full-batch all-reduces: docs/accelerators.md). By rows, FSDP gathers the
    # table like any weight and the activations stay batch-sharded.
    "vocab": "fsdp",
    "table_embed": None,
    "heads": None,  # heads * head_dim of q/k/v/o projections
    "mlp": None,
    "dense_in": "fsdp",
    "dense_out": None,
    "norm": None,
}

#: (regex on the "/"-joined param path, logical names per array dim). First match wins.
PARAM_AXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"embed_tokens/embedding$", ("vocab", "table_embed")),
    (r"self_attn/[qkv]_proj/kernel$", ("embed", "heads")),
    (r"self_attn/o_proj/kernel$", ("heads", "embed")),
    (r"mlp/(gate|up)_proj/kernel$", ("embed", "mlp")),
    (r"mlp/down_proj/kernel$", ("mlp", "embed")),
    (r"(norm|layernorm)/weight$", ("norm",)),
    (r"^dense_\d+/kernel$", ("dense_in", "dense_out")),
    (r"^dense_\d+/bias$", ("dense_out",)),
)


class ShardingError(TarkaError):
    """A mesh or parameter layout that cannot be built."""


def path_str(path) -> str:
    """``jax.tree_util`` key path -> "encoder/layers_0/self_attn/q_proj/kernel"."""
    parts = []
    for k in path:
        parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
    return "/".join(parts)


def logical_axes(path: str, ndim: int) -> tuple[str, ...]:
    """Logical axis names of the param at ``path``; raises if no rule matches."""
    for pattern, names in PARAM_AXES:
        if re.search(pattern, path):
            if len(names) != ndim:
                raise ShardingError(f"rule {pattern!r} names {len(names)} axes but {path} "
                                    f"has {ndim}")
            return names
    raise ShardingError(f"no logical-axis rule matches parameter {path!r}; add one to "
                        "tarka_jax.nn.sharding_rules.PARAM_AXES")


def _axis_size(mesh: Mesh, axis) -> int:
    axes = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([mesh.shape[a] for a in axes]))


def spec_for(mesh: Mesh, names: tuple[str, ...], shape: tuple[int, ...]) -> P:
    """PartitionSpec of one array from its logical names; undivisible dims replicate."""
    out = []
    for name, size in zip(names, shape):
        axis = RULES[name]
        if axis is not None and size % _axis_size(mesh, axis):
            axis = None
        out.append(axis)
    return P(*out)


def param_specs(params, mesh: Mesh):
    """Tree of PartitionSpecs for a param tree (arrays or ShapeDtypeStructs)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: spec_for(mesh, logical_axes(path_str(path), len(x.shape)), x.shape),
        params,
    )


def param_shardings(params, mesh: Mesh):
    return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(params, mesh))

"""The training loops' meshes: a ("data", "fsdp") grid and the batch / replicated shardings.

The logical axis names of the parameters and the rules table that maps them to mesh axes
live one layer down, in :mod:`tarka_jax.nn.sharding_rules` (the inference ``Embedder``
shards with the same table); import them from there.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tarka_jax.nn.sharding_rules import MESH_AXES, RULES, ShardingError


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """[B, T] inputs: rows over every chip (data and fsdp both split the batch)."""
    return NamedSharding(mesh, P(RULES["batch"]))


def to_global(x: np.ndarray, sharding) -> jax.Array:
    """This host's rows -> one global array (single host: the whole batch)."""
    return jax.make_array_from_process_local_data(sharding, x)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
    """A ("data", "fsdp") mesh over all (global) devices; -1 takes what is left."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if data == -1 and fsdp == -1:
        raise ShardingError("mesh.data and mesh.fsdp cannot both be -1")
    if data == -1:
        if n % fsdp:
            raise ShardingError(f"mesh.fsdp={fsdp} does not divide the {n} devices")
        data = n // fsdp
    if fsdp == -1:
        if n % data:
            raise ShardingError(f"mesh.data={data} does not divide the {n} devices")
        fsdp = n // data
    if data * fsdp != n:
        raise ShardingError(f"mesh data={data} x fsdp={fsdp} = {data * fsdp} but there are "
                            f"{n} devices")
    grid = np.asarray(devices, dtype=object).reshape(data, fsdp)
    return Mesh(grid, MESH_AXES)

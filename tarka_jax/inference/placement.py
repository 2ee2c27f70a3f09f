"""Where an :class:`~tarka_jax.Embedder` runs: a mesh, its param and batch shardings.

Why a module: the Embedder's job is texts -> embeddings; which devices hold the
params and how a pass's rows are split is a separate decision, made once here
(docs/devices.md).

* default (``device=None, devices=None, mesh=None``): every local device of the
  default backend (``jax.local_devices()``; only the one device of a
  ``jax.default_device`` in force) on one ``"data"`` axis; params
  replicated, each pass's rows split evenly (the shape policy of
  :mod:`tarka_jax.inference.batching` rounds every row count to a multiple of
  :attr:`Placement.rows`);
* ``device=``: one device (sentence-transformers' spelling); ``devices=``: a list;
* ``mesh=``: a user mesh with a ``"data"`` axis and optionally an ``"fsdp"`` axis:
  params sharded by the distillation rules table (:mod:`tarka_jax.nn.sharding_rules`),
  rows split over both axes.

Several processes (``jax.distributed``): the default is this process's own devices,
and each process encodes its own texts (what ``tarka-jax embed-corpus`` does). A
``mesh=`` / ``devices=`` spanning processes (every process, the same number of devices
each) makes ``encode`` a collective: every process calls it the same number of times
with the same options, each with its own texts, and gets its own texts' embeddings.
The processes agree on one pass schedule (:mod:`tarka_jax.inference.process_passes`), each feeds
its rows of a pass (``jax.make_array_from_process_local_data``) and reads back only
those (its addressable shards).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tarka_jax.errors import InputTypeError, UsageError
from tarka_jax.inference import process_passes, st_args
from tarka_jax.nn.sharding_rules import param_shardings

BATCH_AXES = ("data", "fsdp")  # a pass's rows split over these (those the mesh has)


@dataclasses.dataclass(frozen=True)
class Placement:
    """A mesh with a ``"data"`` (and maybe ``"fsdp"``) axis: this process's devices, or
    the same number of devices of every process."""

    mesh: Mesh

    @classmethod
    def build(cls, device: Any = None, devices: Any = None, mesh: Any = None) -> Placement:
        """From at most one of ``device`` / ``devices`` / ``mesh`` (module docstring).

        Raises:
          ValueError: two of them at once (naming both), an empty or repeated device
            list, devices of several platforms, devices of some other processes but not
            of all, or not as many of each, a mesh without a ``"data"`` axis or with
            another axis.
        """
        given = [n for n, v in (("device", device), ("devices", devices), ("mesh", mesh))
                 if v is not None]
        if len(given) > 1:
            raise UsageError(f"{' and '.join(f'{n}=' for n in given)} given: pass one of "
                             "device= (one device), devices= (a list) or mesh=")
        if mesh is not None:
            return cls(_check_mesh(mesh))
        if device is not None:
            found = [st_args.single_device(device)]
        elif devices is not None:
            found = st_args.resolve_device(devices)
        elif jax.config.jax_default_device is not None:  # `with jax.default_device(d):`
            found = [st_args.single_device(jax.config.jax_default_device)]
        else:
            found = jax.local_devices()
        _check_devices(found, "devices")
        return cls(Mesh(np.asarray(found, dtype=object), ("data",)))

    @property
    def devices(self) -> list:
        return list(self.mesh.devices.flat)

    @property
    def device(self):
        """The one device, or None when there are several."""
        return self.devices[0] if self.mesh.size == 1 else None

    @functools.cached_property
    def spans_processes(self) -> bool:
        """True when the mesh holds devices of other processes (``encode`` is collective)."""
        return len({d.process_index for d in self.devices}) > 1

    @property
    def rows(self) -> int:
        """Every pass's row count (this process's rows) divides by this: the size of the
        batch axes, shared out over the processes."""
        return (math.prod(self.mesh.shape[a] for a in self._batch_axes)
                // len({d.process_index for d in self.devices}))

    @property
    def _batch_axes(self) -> tuple[str, ...]:
        return tuple(a for a in BATCH_AXES if a in self.mesh.axis_names)

    def put_params(self, params):
        """Replicated on a ``"data"`` mesh; sharded by the rules table with ``"fsdp"``."""
        if self.spans_processes:  # every process holds the same values: place from the host
            params = jax.tree.map(np.asarray, params)
        if "fsdp" in self.mesh.axis_names:
            return jax.device_put(params, param_shardings(params, self.mesh))
        return jax.device_put(params, NamedSharding(self.mesh, P()))

    def schedule(self, passes: list, pad_id: int) -> list:
        """The passes to run: as planned, or on the schedule every process agrees on
        (a collective, when the mesh spans processes)."""
        return process_passes.agree(passes, pad_id) if self.spans_processes else passes

    def put_batch(self, arrays: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """``[rows, T]`` int32 arrays, rows split over the batch axes (asynchronous).

        Over processes the arrays are this process's rows of the global batch."""
        sharding = self._batch_sharding
        if self.spans_processes:
            return jax.make_array_from_process_local_data(sharding, arrays)
        return jax.device_put(arrays, sharding)

    def local_rows(self, x: jax.Array):
        """A pass's output ``[rows, ...]``: itself, or over processes this process's rows
        (those its :meth:`put_batch` fed), fetched when ``np.asarray`` reads them."""
        if not self.spans_processes:
            return x
        sharding = self._batch_sharding
        if not x.sharding.is_equivalent_to(sharding, x.ndim):
            x = _reshard(sharding)(x)
        return _LocalRows(x)

    def put_output(self, x):
        """``convert_to_tensor``'s placement: replicated on every device of the mesh
        (over processes: on this process's devices of it, holding its own texts)."""
        if self.spans_processes:
            local = [d for d in self.devices if d.process_index == jax.process_index()]
            mesh = Mesh(np.asarray(local, dtype=object), ("data",))
            return jax.device_put(x, NamedSharding(mesh, P()))
        return jax.device_put(x, NamedSharding(self.mesh, P()))

    def check_local(self, what: str) -> None:
        """Refuse ``what`` on a mesh spanning processes (it has no collective path)."""
        if self.spans_processes:
            raise UsageError(f"{what} runs on one process's devices only; this model's mesh "
                             "spans processes: build one on jax.local_devices() for it "
                             "(docs/devices.md)")

    @property
    def _batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, P(self._batch_axes))

    def context(self):
        """The mesh in context around a jitted call (kernels then run per batch shard,
        docs/kernels.md); nothing for one device."""
        import contextlib

        return jax.set_mesh(self.mesh) if self.mesh.size > 1 else contextlib.nullcontext()

    def check_encode_device(self, device: Any) -> None:
        """``encode(device=...)``: None, or exactly the devices the model lives on."""
        if device is None:
            return
        if set(st_args.resolve_device(device)) != set(self.devices):
            where = self.device or f"{self.mesh.size} devices {dict(self.mesh.shape)}"
            raise UsageError(f"encode(device={device!r}): this model lives on {where}; "
                             "build it with device= / devices= / mesh= instead")


def _check_devices(found: list, what: str) -> None:
    if not found:
        raise UsageError(f"{what}=[] names no device")
    if len(set(found)) != len(found):
        raise UsageError(f"{what} names a device twice: {found}")
    platforms = sorted({d.platform for d in found})
    if len(platforms) > 1:
        raise UsageError(f"{what} mixes platforms {platforms}: one backend per model")
    here = jax.process_index()
    per_process = collections.Counter(d.process_index for d in found)
    if set(per_process) == {here}:
        return
    missing = sorted(set(range(jax.process_count())) - set(per_process))
    if missing:
        raise UsageError(
            f"{what} includes devices of process(es) {sorted(set(per_process) - {here})} "
            f"but none of {missing} (this is process {here}): a mesh over processes takes "
            "devices of every process, or use this process's devices only (docs/devices.md)")
    if len(set(per_process.values())) > 1:
        raise UsageError(f"{what} has unequal device counts per process {dict(per_process)}: "
                         "each process feeds an equal share of every pass's rows")


class _LocalRows:
    """This process's rows of a global ``[rows, ...]`` array sharded over the batch axes,
    in the order ``make_array_from_process_local_data`` took them (global row order)."""

    def __init__(self, x: jax.Array):
        self.x = x

    def __array__(self, dtype=None, copy=None):
        shards = {s.index[0].start or 0: s.data for s in self.x.addressable_shards}
        out = np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])
        return out if dtype is None else out.astype(dtype)


@functools.lru_cache(maxsize=None)
def _reshard(sharding: NamedSharding):
    return jax.jit(lambda x: x, out_shardings=sharding)


def _check_mesh(mesh: Any) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise InputTypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    names = tuple(mesh.axis_names)
    extra = [a for a in names if a not in BATCH_AXES]
    if "data" not in names or extra:
        raise UsageError(f"mesh axes {names}: an Embedder mesh has a 'data' axis and "
                         "optionally an 'fsdp' axis, nothing else")
    _check_devices(list(mesh.devices.flat), "mesh")
    # Auto axes: the forward is written for GSPMD propagation, not explicit sharding.
    return Mesh(mesh.devices, names, axis_types=(AxisType.Auto,) * len(names))


__all__ = ["BATCH_AXES", "Placement"]

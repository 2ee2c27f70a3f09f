"""Run the Pallas Triton attention per shard of the batch when a mesh is in context.

XLA has no partitioning rule for a ``pallas_call``: under a multi-device mesh
it would gather the batch onto every device around the kernel. Attention is
independent per batch row, so when a mesh is known at trace time (explicitly
sharded inputs, or ``jax.set_mesh(mesh)`` entered around the jitted call)
:func:`per_batch_shard` wraps the kernel in
``jax.shard_map`` over the batch axis: each device runs it on its own rows
and nothing is communicated.

The batch is split over the mesh's non-manual axes, in mesh order, as far
as their sizes divide it (the distillation mesh splits it over all of
``("data", "fsdp")``). Explicitly sharded inputs keep their own batch axes.
Without a mesh, or inside a ``shard_map`` that is already manual over every
axis, the kernel is called as it is.
"""

from __future__ import annotations

import jax
from jax.sharding import PartitionSpec as P


def batch_axes(mesh, batch: int) -> tuple[str, ...]:
    """Mesh axes to split a batch of ``batch`` rows over: a prefix whose sizes divide it."""
    manual = set(getattr(mesh, "manual_axes", ()))
    axes, size = [], 1
    for name in mesh.axis_names:
        n = mesh.shape[name]
        if name in manual or n == 1:
            continue
        if batch % (size * n):
            break
        axes.append(name)
        size *= n
    return tuple(axes)


def _mesh_and_axes(q):
    """(mesh, batch axes) from q's explicit sharding, else from the mesh in context."""
    sharding = getattr(jax.typeof(q), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is not None and not mesh.empty and sharding.spec and sharding.spec[0] is not None:
        axes = sharding.spec[0]
        return mesh, (axes,) if isinstance(axes, str) else tuple(axes)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return None, ()
    return mesh, batch_axes(mesh, q.shape[0])


def per_batch_shard(fn, q, k, v, segment_ids):
    """``fn(q, k, v, segment_ids)`` run per batch shard of the mesh, if there is one.

    The mesh is q's own (explicitly sharded arrays) or the one in context
    (``jax.set_mesh``; needed for ``jit(in_shardings=...)`` on an Auto mesh,
    where nothing at trace time says how q is laid out).

    Args:
      fn: attention on [B, T, H, D] arrays and [B, T] segment ids; rows independent.
      q: [B, T, Hq, D]; k, v: [B, T, Hkv, D]; segment_ids: int32 [B, T].
    """
    mesh, axes = _mesh_and_axes(q)
    if not axes:
        return fn(q, k, v, segment_ids)
    spec4, spec2 = P(axes, None, None, None), P(axes, None)
    # Manual over every axis of the mesh, not just the batch's: a TPU (Mosaic) kernel
    # left with an automatic axis (e.g. a size-1 "data" next to "fsdp") is refused by
    # XLA ("Mosaic kernels cannot be automatically partitioned"). Axes the batch does
    # not split see replicated inputs, as GSPMD would give them.
    manual = set(getattr(mesh, "manual_axes", ()))
    mapped = jax.shard_map(
        fn, mesh=mesh, in_specs=(spec4, spec4, spec4, spec2), out_specs=spec4,
        axis_names=frozenset(a for a in mesh.axis_names if a not in manual),
        # pallas_call has no varying-manual-axes rule; rows are independent anyway.
        check_vma=False,
    )
    return mapped(q, k, v, segment_ids)

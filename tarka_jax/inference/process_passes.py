"""One pass schedule for every process of a mesh that spans processes (docs/devices.md).

Why a module: under ``jax.distributed`` a forward pass over a global mesh is a collective,
so every process must run the same number of passes, each at the same shape, in the same
order, although each process encodes its own texts (any count, even none). Each process
plans its passes locally (:mod:`tarka_jax.inference.batching`); :func:`agree` exchanges the plans'
shapes and pads every process's pass ``i`` to the common
``(rows_per_process, width, segments)``, the maximum over processes, adding all-padding
passes where a process has fewer. Padding is what the local plans already use for spare
rows: pad tokens with segment id 0, which attend to nothing and pool into no text, so the
embeddings do not change.
"""

from __future__ import annotations

import numpy as np

from tarka_jax.inference.batching import Pass

_FILL = {"input_ids": None, "segment_ids": 0, "positions": 0}  # None: the pad token id


def pad_pass(p: Pass | None, rows: int, width: int, segments: int, pad_id: int) -> Pass:
    """``p`` grown to ``[rows, width]`` with ``segments`` slots (None: a pass of padding only)."""
    arrays = {}
    for key, fill in _FILL.items():
        a = np.full((rows, width), pad_id if fill is None else fill, np.int32)
        if p is not None:
            r, w = p.arrays[key].shape
            a[:r, :w] = p.arrays[key]
        arrays[key] = a
    if p is None:
        empty = np.zeros(0, np.int64)
        return Pass(arrays, segments, empty, empty, empty)
    return Pass(arrays, segments, p.texts, p.row, p.slot)


def agree(passes: list[Pass], pad_id: int) -> list[Pass]:
    """This process's passes on the schedule every process agrees on (a collective).

    Every process must call it, once per ``encode``, in the same order.
    """
    from jax.experimental import multihost_utils

    counts = multihost_utils.process_allgather(np.array([len(passes)], np.int32))  # [P, 1]
    n = int(np.max(counts))
    if n == 0:
        return []
    shapes = np.zeros((n, 3), np.int32)  # [passes, (rows, width, segments)]
    for i, p in enumerate(passes):
        shapes[i] = (*p.arrays["input_ids"].shape, p.segments)
    # [P, n, 3] -> [n, 3]; a process without pass i has zeros there, so the max is the others'
    common = np.asarray(multihost_utils.process_allgather(shapes)).max(axis=0)
    return [pad_pass(passes[i] if i < len(passes) else None, *map(int, common[i]), pad_id)
            for i in range(n)]


__all__ = ["agree", "pad_pass"]

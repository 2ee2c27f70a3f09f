"""Which texts share a forward pass, and at what shape: the inference shape policy.

Every distinct ``(rows, row_length, segments_per_row)`` is one compiled program,
so the policy trades padding (wasted FLOPs) against the number of programs
(compile time). :class:`Embedder` follows it; nothing here touches JAX.

Row lengths
  Unpacked rows use :func:`row_lengths`: 16, 32, 64, 128, then every 64 up to
  512, then every 128 up to ``max_length`` (always included). Above 128 a row is
  padded by at most 64 (128) tokens, not up to 2x as with powers of two.

Packing (``pack=True``)
  A text of ``n`` tokens goes into the length group whose row length ``W`` is
  the smallest of :func:`pack_widths` (powers of two from 64, and
  ``max_length``) with ``W >= 2 n``, capped at ``max_length``: two or more texts
  share a row, a text shares it only with texts of similar length (the group
  holds ``n`` in ``(W/4, W/2]``; the smallest and the largest group take
  everything below / above), and a 20-token query never rides in a 2048 row,
  where the full-attention layers would cost it ~32x more. Within a group rows
  are filled best-fit, longest first, at most ``segments_per_row`` texts each.

Rows per pass
  Full passes have ``batch_size`` rows. A group's last, partial pass is padded
  to :func:`round_rows`: the next power of two below ``row_multiple`` (default
  8), a multiple of ``row_multiple`` above it, so at most ``row_multiple - 1``
  empty rows instead of up to half the batch. Every row count is a multiple of
  ``devices`` (a data-parallel mesh splits rows evenly); with ``devices > 1``
  ``batch_size`` itself is rounded up to a multiple of it.

Compile bound
  A process compiles at most :func:`compile_bound` programs per dtype /
  attention / ``batch_size`` setting: ``len(widths) * len(row_counts)``. For
  ``max_length`` 2048 and ``batch_size`` 32 that is 7 x 7 = 49 packed and
  23 x 7 = 161 unpacked; a single call uses one or two per group it touches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tarka_jax.tokenizer import bucket_for, pack_rows


def row_lengths(max_length: int) -> tuple[int, ...]:
    """Unpacked row lengths: powers of two to 128, then steps of 64 to 512, then 128."""
    out = [n for n in (16, 32, 64, 128) if n < max_length]
    n = 128
    while True:
        n += 64 if n < 512 else 128
        if n >= max_length:
            break
        out.append(n)
    out.append(max_length)
    return tuple(out)


def pack_widths(max_length: int) -> tuple[int, ...]:
    """Packed row lengths: powers of two from 64 below ``max_length``, then ``max_length``."""
    out, n = [], 64
    while n < max_length:
        out.append(n)
        n *= 2
    return (*out, max_length)


def pack_width_for(n: int, widths: Sequence[int]) -> int:
    """The group row length for a text of ``n`` tokens: smallest width >= 2n, capped."""
    return max(bucket_for(2 * n, widths), n)


def default_segments(width: int, widths: Sequence[int]) -> int:
    """Texts per row: 8 in the smallest group (texts up to W/2 long), else 4 (texts > W/4)."""
    return 8 if width == widths[0] else 4


def round_rows(n: int, batch_size: int, row_multiple: int = 8, devices: int = 1) -> int:
    """Rows to run ``n`` real rows with (``n <= batch_size``); see the module docstring."""
    if n >= batch_size:
        rows = batch_size
    elif n <= row_multiple:
        rows = 1 << max(n - 1, 0).bit_length()
    else:
        rows = -(-n // row_multiple) * row_multiple
    rows = min(rows, batch_size)
    return -(-rows // devices) * devices


def row_counts(batch_size: int, row_multiple: int = 8, devices: int = 1) -> tuple[int, ...]:
    """Every row count :func:`round_rows` can return."""
    return tuple(sorted({round_rows(n, batch_size, row_multiple, devices)
                         for n in range(1, batch_size + 1)}))


def compile_bound(widths: Sequence[int], batch_size: int, row_multiple: int = 8,
                  devices: int = 1) -> int:
    """Most distinct programs one setting compiles: widths x row counts."""
    return len(widths) * len(row_counts(batch_size, row_multiple, devices))


@dataclasses.dataclass
class Pass:
    """One forward pass: int32 arrays ``[rows, width]`` and where each text's embedding lands.

    ``texts[i]`` is the input index whose embedding is output ``[row[i], slot[i]]``.
    """

    arrays: dict[str, np.ndarray]
    segments: int
    texts: np.ndarray
    row: np.ndarray
    slot: np.ndarray


def _layout(ids, rows: Sequence[Sequence[int]], width: int, n_rows: int, segments: int,
            pad_id: int) -> Pass:
    input_ids = np.full((n_rows, width), pad_id, np.int32)
    segment_ids = np.zeros((n_rows, width), np.int32)
    positions = np.zeros((n_rows, width), np.int32)
    texts, row_of, slot_of = [], [], []
    for r, members in enumerate(rows):
        start = 0
        for s, i in enumerate(members):
            n = len(ids[i])
            input_ids[r, start:start + n] = ids[i]
            segment_ids[r, start:start + n] = s + 1
            positions[r, start:start + n] = np.arange(n, dtype=np.int32)
            texts.append(i)
            row_of.append(r)
            slot_of.append(s)
            start += n
    arrays = {"input_ids": input_ids, "segment_ids": segment_ids, "positions": positions}
    as_int = lambda x: np.asarray(x, np.int64)
    return Pass(arrays, segments, as_int(texts), as_int(row_of), as_int(slot_of))


def _full_batch(batch_size: int, devices: int) -> int:
    return -(-batch_size // devices) * devices


def plan_sorted(ids, batch_size: int, widths: Sequence[int], *, pad_id: int = 0,
                row_multiple: int = 8, devices: int = 1) -> list[Pass]:
    """One text per row, longest first, each pass padded to the bucket of its longest text."""
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(-lengths, kind="stable")
    full = _full_batch(batch_size, devices)
    passes = []
    for start in range(0, len(order), full):
        chunk = order[start:start + full]
        width = max(bucket_for(int(lengths[chunk[0]]), widths), int(lengths[chunk[0]]), 1)
        n_rows = round_rows(len(chunk), full, row_multiple, devices)
        passes.append(_layout(ids, [[int(i)] for i in chunk], width, n_rows, 1, pad_id))
    return passes


def plan_packed(ids, batch_size: int, widths: Sequence[int], *, pad_id: int = 0,
                segments: int | None = None, row_multiple: int = 8,
                devices: int = 1) -> list[Pass]:
    """Texts packed per length group (module docstring); passes longest group first."""
    lengths = [len(x) for x in ids]
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(pack_width_for(max(n, 1), widths), []).append(i)
    full = _full_batch(batch_size, devices)
    passes = []
    for width in sorted(groups, reverse=True):
        members = groups[width]
        per_row = segments or default_segments(width, widths)
        rows = [[members[j] for j in row]
                for row in pack_rows([lengths[i] for i in members], width, per_row)]
        for start in range(0, len(rows), full):
            part = rows[start:start + full]
            n_rows = round_rows(len(part), full, row_multiple, devices)
            passes.append(_layout(ids, part, width, n_rows, per_row, pad_id))
    return passes


def pipelined(forward, batches, total: int, show_progress_bar: bool):
    """Yield ``(key, numpy result)`` per ``(key, batch)``, dispatching batch i+1 before
    fetching batch i, so host work and device work overlap.

    ``forward(batch, key.segments)`` returns a device array (asynchronously dispatched).
    """
    bar = None
    if show_progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="Batches", unit="batch")
    pending = None
    try:
        for key, batch in batches:
            current = (key, forward(batch, key.segments))
            if pending is not None:
                yield pending[0], np.asarray(pending[1])
                if bar is not None:
                    bar.update(1)
            pending = current
        if pending is not None:
            yield pending[0], np.asarray(pending[1])
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

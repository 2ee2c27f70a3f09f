"""Row shapes of token batches: length buckets (few compiled shapes) and best-fit packing.

One home for the rule every batcher uses (inference, distillation, fine-tuning, held-out
evaluation): a batch of texts is padded to the smallest bucket that holds its longest
text, and packed rows take texts best-fit, longest first (:func:`pack_rows`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from tarka_jax.errors import UsageError


def length_buckets(max_length: int, smallest: int = 16, per_octave: int = 1) -> tuple[int, ...]:
    """Row lengths from ``smallest`` up to ``max_length`` (always included).

    ``per_octave=1`` gives powers of two (16, 32, 64, ...); ``per_octave=2`` adds
    the midpoints (16, 24, 32, 48, 64, 96, ...): at most 1.5x padding instead of
    2x, for up to twice as many compiled shapes. Lengths are multiples of 8.
    """
    out, octave = [], smallest
    while octave < max_length:
        for i in range(per_octave):
            n = int(round(octave * 2 ** (i / per_octave) / 8)) * 8
            if n < max_length and (not out or n > out[-1]):
                out.append(n)
        octave *= 2
    out.append(max_length)
    return tuple(out)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= length (the largest bucket if none is)."""
    i = bisect.bisect_left(buckets, length)
    return buckets[min(i, len(buckets) - 1)]


def pack_rows(lengths: Sequence[int], row_length: int | Callable[[int], int],
              max_segments: int | Callable[[int], int] | None = None) -> list[list[int]]:
    """Assign texts to rows: best-fit, longest first.

    Each text goes to the fullest row with room for it (and fewer than ``max_segments``
    texts), else to a new row. ``row_length``: one width, or a new row's width from its
    first (longest) text's length; ``max_segments``: a number or a function of the row's
    width. Rows list text indices in the order placed. O(n log n) up to list inserts.
    """
    width_for = row_length if callable(row_length) else (lambda n: row_length)
    cap = max_segments if callable(max_segments) else (lambda width: max_segments)
    rows: list[tuple[list[int], int | None]] = []  # (texts, most texts it may hold)
    free: list[tuple[int, int]] = []  # sorted (free space, row) of rows that may take more
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, r = free.pop(k)
        elif n > (space := width_for(n)):
            raise UsageError(f"a text of {n} tokens does not fit a row of {space}")
        else:
            r = len(rows)
            rows.append(([], cap(space)))
        members, most = rows[r]
        members.append(i)
        space -= n
        if space > 0 and (most is None or len(members) < most):
            bisect.insort(free, (space, r))
    return [members for members, _ in rows]


def round_length(n: int, multiple: int | None, buckets: Sequence[int] | None) -> int:
    """A row width for ``n`` tokens: its bucket (never below ``n``), else ``n`` rounded up to
    ``multiple``, else ``n`` (at least 1)."""
    n = max(n, 1)
    if buckets:
        return max(bucket_for(n, sorted(buckets)), n)
    if multiple:
        return -(-n // multiple) * multiple
    return n

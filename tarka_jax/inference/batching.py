"""Which texts share a forward pass, and at what shape: the inference shape policy.

Every distinct ``(rows, row_length, segments_per_row)`` is one compiled program,
so the policy trades padding (wasted FLOPs) against the number of programs
(compile time). :class:`Embedder` follows it; nothing here touches JAX.

Row lengths
  Unpacked rows use :func:`row_lengths`: 16, 32, 64, 128, then every 64 up to
  512, then every 128 up to ``max_length`` (always included). Above 128 a row is
  padded by at most 64 (128) tokens, not up to 2x as with powers of two.

Packing (``pack=True``)
  Texts are placed longest first, best-fit: a text goes into the fullest open
  row that still has room for it, else it opens a row of the smallest width that
  holds it. A row that a long text opened is already paid for, so shorter texts
  fill its free end; a short text never *opens* a wide row, where the
  full-attention layers would cost each of its tokens up to 32x more. A row of
  width ``W`` holds at most :func:`segments_for` texts (``W / 8``, 4 to 32).

  The widths rows may open at are chosen per call among candidates, by an estimate of the
  work (:class:`SlotCost`: rows x width x FLOPs per token slot, attention counted by the keys
  each layer reaches, rounding included): the powers of two of :func:`pack_widths` (wide steps
  leave free ends that the next texts fill: passages) or its fine steps (to 256, then every 128
  to 1024, then every 256: a long text alone in a row wastes less: long documents), each with a
  floor (texts shorter than the floor open rows of the floor: a small call fills a few wider
  rows instead of several partly empty passes), and with passes cut per width or across widths
  (each pass padded to its widest row). Each distinct pass shape is also charged 256 token
  slots (one more program to compile): 32 log-uniform texts then run in 3 shapes instead of 9,
  for ~7% more estimated work. Planning is plain Python, about 0.5 s per 100k texts per
  candidate; calls of more than 4096 texts choose on a sample.

Rows per pass
  Full passes have ``batch_size`` rows, or with ``pass_tokens`` (the Embedder's
  default on CPU: :data:`PASS_TOKENS`) as many as fit in that many token slots per device
  (:func:`pass_rows`): on CPU a pass whose activations stay in cache computes
  up to 1.6x more slots per second than a 16k-slot one. A width's last, partial pass is
  padded by :func:`round_rows`: up to ``row_multiple`` rows (:data:`ROW_MULTIPLE`) it runs
  exactly its rows (3 rows of queries: 0.36 s, not 0.53 s padded to 4, on the dev CPU), above
  that a multiple of ``row_multiple``. Every row count is a multiple of ``devices`` (a mesh
  splits rows evenly); with ``devices > 1`` ``batch_size`` is rounded up to a multiple of it.

Compile bound
  A process compiles at most :func:`compile_bound` programs per dtype /
  attention / ``batch_size`` setting: ``len(widths) * len(row_counts)`` (the
  texts per row follow from the width), ``widths`` the union of the candidate
  sets. For ``max_length`` 2048 and ``batch_size`` 32 that is 13 x 11 = 143
  packed and 22 x 11 = 242 unpacked; a single call uses one or two per width it
  touches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from tarka_jax.text.rows import bucket_for, pack_rows


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


def pack_widths(max_length: int, fine: bool = False) -> tuple[int, ...]:
    """Packed row lengths: powers of two from 64 (``fine``: to 256, then every 128 to 1024,
    then every 256), then ``max_length``."""
    out, n = [], 64
    while n < max_length:
        out.append(n)
        n = n * 2 if not fine or n < 256 else n + (128 if n < 1024 else 256)
    return (*out, max_length)


def pack_width_sets(max_length: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The candidate width sets the Embedder packs with: powers of two, and the fine steps."""
    return pack_widths(max_length), pack_widths(max_length, fine=True)


def segments_for(width: int) -> int:
    """Most texts a packed row of ``width`` holds: ``width / 8``, at least 4, at most 32."""
    return min(32, max(4, width // 8))


@dataclasses.dataclass(frozen=True)
class SlotCost:
    """Estimated work of one token slot in a row of a given width (relative units).

    ``dense`` is the FLOPs per token outside attention (all layers);
    ``attention`` the FLOPs per (query, key) pair of one layer; ``keys`` how many
    keys each layer reaches (None: the whole row, a full-attention layer).
    Attention counts ``attention_weight`` times its FLOPs: on this CPU it runs at
    about half the dense layers' FLOP rate (BENCHMARKS.md, "where the time goes").
    """

    dense: float
    attention: float
    keys: tuple[int | None, ...]
    attention_weight: float = 2.0

    @classmethod
    def of(cls, config) -> SlotCost:
        """From a ModelConfig: Q/K/V/O projections, the gated MLP, the windows."""
        q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
        per_layer = 2 * config.hidden_size * (q + 2 * kv + q + 3 * config.intermediate_size)
        keys = []
        for layer in range(config.num_layers):
            window = config.window_for(layer)
            keys.append(None if window is None else window[0] + window[1] + 1)
        return cls(dense=per_layer * config.num_layers, attention=4 * q, keys=tuple(keys))

    def __call__(self, width: int) -> float:
        reached = sum(width if k is None else min(width, k) for k in self.keys)
        return self.dense + self.attention_weight * self.attention * reached


def _slot_count(width: int) -> float:
    return 1.0


# Token slots per pass and device where smaller passes run faster per slot (benchmarks/cpu_pass_size.py,
# BENCHMARKS.md "slots per pass"): on this 2-core CPU a [1, 512] pass computes 422 slots/s,
# [32, 512] 257. None: ``batch_size`` rows (accelerators fill better with big passes).
PASS_TOKENS = {"cpu": 512}

# Rows above which round_rows pads a partial pass to a multiple (below: exactly its rows). CPU: 8,
# as a pass capped at PASS_TOKENS holds at most 8 rows of the narrowest packed width (512 / 64):
# every CPU pass runs exactly its rows (32 synthetic queries: 896 slots, not 1024), and the count
# of row counts (the compile bound) is that of 4. Elsewhere 4: full passes of batch_size rows.
DEFAULT_ROW_MULTIPLE = 4
ROW_MULTIPLE = {"cpu": 8}


def round_rows(n: int, batch_size: int, row_multiple: int = DEFAULT_ROW_MULTIPLE, devices: int = 1) -> int:
    """Rows to run ``n`` real rows with (``n <= batch_size``); see the module docstring."""
    if n >= batch_size:
        rows = batch_size
    elif n <= row_multiple:
        rows = max(n, 1)
    else:
        rows = -(-n // row_multiple) * row_multiple
    rows = min(rows, batch_size)
    return -(-rows // devices) * devices


@dataclasses.dataclass(frozen=True)
class RowCounts:
    """Every row count :func:`round_rows` can return for one setting, in O(log row_multiple).

    Why not a loop over ``n`` in ``1..batch_size``: ``--batch-size 10000000000`` never
    returned (and there are ``batch_size / row_multiple`` counts, so not a set either).
    The counts are, each rounded up to a multiple of ``devices``: every count up to
    ``min(row_multiple, batch_size - 1)`` (``n <= row_multiple``), the multiples
    ``k * row_multiple`` below ``batch_size`` for ``k >= 2`` (larger ``n``), and
    ``batch_size`` itself. Tested equal to the loop for every small setting.
    """

    batch_size: int
    row_multiple: int = DEFAULT_ROW_MULTIPLE
    devices: int = 1

    def _up(self, rows: int) -> int:
        return -(-rows // self.devices) * self.devices

    @property
    def _k_max(self) -> int:  # multiples k * m < batch_size, k in 2..k_max
        return -(-self.batch_size // self.row_multiple) - 1

    @property
    def _singles(self) -> list[int]:
        """The counts outside the multiples: 1 .. row_multiple, and batch_size (sorted, rounded)."""
        top = max(min(self.row_multiple, self.batch_size - 1), 1)
        return sorted({self._up(r) for r in (*range(1, top + 1), self.batch_size)})

    def _in_multiples(self, v: int) -> bool:
        """Whether ``v`` (a multiple of devices) is some rounded ``k * m``: v - d < k*m <= v."""
        m, d = self.row_multiple, self.devices
        return max(2, (v - d) // m + 1) <= min(self._k_max, v // m)

    def __len__(self) -> int:
        m, d, k = self.row_multiple, self.devices, self._k_max
        multiples = 0 if k < 2 else min(k - 1, -(-k * m // d) - -(-2 * m // d) + 1)
        return multiples + sum(not self._in_multiples(v) for v in self._singles)

    def __iter__(self):
        k = self._k_max
        multiples = (self._up(i * self.row_multiple) for i in range(2, k + 1))
        return iter(sorted(set(self._singles).union(multiples)))

    def largest_within(self, rows: int) -> int | None:
        """The largest count ``<= rows`` (None: every count is larger)."""
        m, d = self.row_multiple, self.devices
        best = [v for v in self._singles if v <= rows]
        k = min(self._k_max, (rows // d) * d // m)
        if k >= 2:
            best.append(self._up(k * m))
        return max(best, default=None)

    @property
    def smallest(self) -> int:
        return round_rows(1, self.batch_size, self.row_multiple, self.devices)


def row_counts(batch_size: int, row_multiple: int = DEFAULT_ROW_MULTIPLE, devices: int = 1) -> tuple[int, ...]:
    """Every row count :func:`round_rows` can return (a tuple: for small settings and tests;
    :class:`RowCounts` answers ``len`` and "the largest within" without listing them)."""
    return tuple(RowCounts(batch_size, row_multiple, devices))


def compile_bound(widths: Sequence[int], batch_size: int, row_multiple: int = DEFAULT_ROW_MULTIPLE,
                  devices: int = 1) -> int:
    """Most distinct programs one setting compiles: widths x row counts."""
    return len(widths) * len(RowCounts(batch_size, row_multiple, devices))


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
                row_multiple: int = DEFAULT_ROW_MULTIPLE, devices: int = 1,
                pass_tokens: int | None = None) -> list[Pass]:
    """One text per row, longest first, each pass padded to the bucket of its longest text
    (at most :func:`pass_rows` rows)."""
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(-lengths, kind="stable")
    full = _full_batch(batch_size, devices)
    passes, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        width = max(bucket_for(longest, widths), longest, 1)
        chunk = order[start:start + pass_rows(width, full, pass_tokens, row_multiple, devices)]
        n_rows = round_rows(len(chunk), full, row_multiple, devices)
        passes.append(_layout(ids, [[int(i)] for i in chunk], width, n_rows, 1, pad_id))
        start += len(chunk)
    return passes


def _fill(lengths: Sequence[int], widths: Sequence[int],
          floor: int, per_row: Callable[[int], int]) -> list[tuple[int, list[int]]]:
    """Best-fit rows (text.rows.pack_rows), a new row at the smallest width >= max(n, floor).

    Returns ``(width, texts)`` per row, widest first.
    """
    width_for = lambda n: max(bucket_for(max(n, floor), widths), n)
    rows = [(width_for(lengths[row[0]]), row)  # row[0]: the text that opened it
            for row in pack_rows(lengths, width_for, per_row)]
    return sorted(rows, key=lambda r: -r[0])


def _passes(rows: list[tuple[int, list[int]]], rows_for: Callable[[int], int],
            by_width: bool) -> list[tuple[int, list[list[int]]]]:
    """Cut widest-first rows into passes of at most ``rows_for(width)`` rows: per width
    (each width's last pass partial), or across widths (each pass padded to its widest row)."""
    groups = [rows] if not by_width else [
        [r for r in rows if r[0] == width] for width in sorted({w for w, _ in rows}, reverse=True)]
    out = []
    for group in groups:
        start = 0
        while start < len(group):
            width = group[start][0]
            part = group[start:start + rows_for(width)]
            out.append((width, [r for _, r in part]))
            start += len(part)
    return out


def pass_rows(width: int, full: int, pass_tokens: int | None, row_multiple: int = DEFAULT_ROW_MULTIPLE,
              devices: int = 1) -> int:
    """Rows of a full pass at ``width``: ``full``, or with ``pass_tokens`` (token slots per
    device: the cap is about one device's cache) the largest row count of :func:`row_counts`
    within ``pass_tokens * devices / width`` rows (at least the smallest), so capped passes
    reuse the row counts the compile bound already counts."""
    if pass_tokens is None:
        return full
    counts = RowCounts(full, row_multiple, devices)
    within = counts.largest_within(pass_tokens * devices // width)
    return within if within is not None else counts.smallest


def plan_packed(ids, batch_size: int, width_sets: Sequence[Sequence[int]], *, pad_id: int = 0,
                segments: int | None = None, row_multiple: int = DEFAULT_ROW_MULTIPLE, devices: int = 1,
                slot_cost: Callable[[int], float] = _slot_count, shape_slots: int = 256,
                pass_tokens: int | None = None, search_sample: int = 4096) -> list[Pass]:
    """Texts packed into rows (module docstring); passes widest first.

    ``width_sets``: the candidate row-width sets (:func:`pack_width_sets`). Every
    set, floor and way of cutting passes is tried; the plan of least estimated
    work wins. Calls of more than
    ``search_sample`` texts choose on a seeded random sample of them (the choice
    is about row fill, which a sample shows). ``segments`` fixes the texts per
    row (default :func:`segments_for`); ``slot_cost(width)`` weighs a token slot
    (default 1: count slots, padding included); each distinct pass shape is charged
    ``shape_slots`` more slots of a 512-wide row (a program to compile once).
    ``pass_tokens`` caps a pass's token slots (:func:`pass_rows`; None: ``batch_size``
    rows at every width).
    """
    lengths = [max(len(x), 1) for x in ids]
    if not lengths:
        return []
    full = _full_batch(batch_size, devices)
    per_row = (lambda width: segments) if segments else segments_for
    rounded = lambda n: round_rows(n, full, row_multiple, devices)
    rows_for = lambda width: pass_rows(width, full, pass_tokens, row_multiple, devices)

    def estimate(passes) -> float:
        shapes = {(rounded(len(rows)), width) for width, rows in passes}
        return (sum(rounded(len(rows)) * width * slot_cost(width) for width, rows in passes)
                + len(shapes) * shape_slots * slot_cost(512))

    sample = lengths
    if len(lengths) > search_sample:
        pick = np.random.default_rng(0).choice(len(lengths), search_sample, replace=False)
        sample = [lengths[i] for i in pick]
    fills = {(widths, floor): _fill(sample, widths, floor, per_row)
             for widths in dict.fromkeys(map(tuple, width_sets)) for floor in widths
             if floor == widths[0] or floor <= bucket_for(max(sample), widths)}
    (widths, floor), by_width = min(
        ((c, by_width) for c in fills for by_width in (True, False)),
        key=lambda cb: estimate(_passes(fills[cb[0]], rows_for, cb[1])))
    rows = fills[widths, floor] if sample is lengths else _fill(lengths, widths, floor, per_row)
    passes = []
    for width, part in _passes(rows, rows_for, by_width):
        passes.append(_layout(ids, part, width, rounded(len(part)), per_row(width), pad_id))
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

"""(anchor, positive[, negative...]) rows -> token batches without duplicate texts, resumable.

Rows come from .jsonl, .jsonl.gz or .parquet files; ``columns`` names the
fields (first the anchor, then the positive, then any hard negatives), and
``where`` keeps only rows whose fields equal the given values (e.g. a ``split``
column). Each column may get its own prompt (the query prompt for anchors, the
document prompt for positives), prepended before tokenising as
sentence-transformers does.

Batches. Each epoch visits the rows in a permutation seeded by ``(seed,
epoch)``; a row joins the batch being filled unless one of its texts is already
in it (an in-batch duplicate would be a false negative: the same text as
positive and as negative), in which case it waits for a later batch of the same
epoch (what sentence-transformers' ``NoDuplicatesBatchSampler`` does). Rows
still waiting when the epoch runs out, and a final partial batch, are left for
the next epoch's permutation. The plan of an epoch depends only on the seed, the
epoch and the rows, so the whole position is ``{"epoch", "index"}`` plus checks
(``seed``, ``num_rows``, ``batch_size``): saved with every checkpoint, restored on
resume, and a resumed run sees the very same batches.

Why not grain: its checkpointable iterators fit the position part, but batches
without duplicates are a stateful, data-dependent grouping that grain's per-record
transforms do not express (it would be a custom ``IterDataset`` holding this same
state), and the GPU image lacks grain. The distillation data made the same
choice (:mod:`tarka_jax.distill.data`); both iterators' position is
:class:`tarka_jax.train.data.EpochPosition`.

Multi-host: every host reads the same files and tokenises the whole global batch
(so all hosts agree on each column's padded length), then keeps its own
contiguous rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from tarka_jax.text.rows import bucket_for, length_buckets
from tarka_jax.text.tokenizer import TextTokenizer
from tarka_jax.train.data import DataError, EpochPosition, read_records, text_columns


def read_rows(paths: Sequence[str], columns: Sequence[str], where: Mapping[str, object] | None = None,
              what: str = "data.train") -> list[tuple[str, ...]]:
    """Rows ``(anchor, positive, negative...)`` of the listed files, in file order.

    A kept row must hold a non-empty string in every column; anything else is an
    error naming the file and line (nothing is dropped silently). ``where``
    filters rows first (``{"split": "train"}``).
    """
    records = read_records(paths, where, what)
    rows = text_columns(records, columns, "data.columns")
    for (loc, _), row in zip(records, rows):
        if row[1] in row[2:]:
            raise DataError(f"{loc}: a negative equals the positive")
    return rows


def no_duplicate_batches(rows: Sequence[tuple[str, ...]], order: Sequence[int],
                         batch_size: int) -> list[list[int]]:
    """Full batches of row indices, in ``order``, none holding a text twice.

    A row that would repeat a text of the batch being filled waits and is tried
    first for the next batch. Rows left when ``order`` runs out (waiting ones and
    a partial batch) are not returned. One pass plus the retries: O(rows).
    """
    batches: list[list[int]] = []
    waiting: list[int] = []
    stream = iter(order)
    while True:
        batch, seen, again = [], set(), []
        for n, i in enumerate(itertools.chain(waiting, stream), 1):
            texts = set(rows[i])
            if texts & seen:
                again.append(i)
                continue
            batch.append(i)
            seen |= texts
            if len(batch) == batch_size:
                break
        else:
            return batches
        batches.append(batch)
        waiting = again + waiting[n:]  # deferred rows, then waiting rows not reached


class ColumnTokenizer:
    """Tokenise each column with its own prompt; pad each to the smallest bucket that fits."""

    def __init__(self, tokenizer: TextTokenizer, prompts: Sequence[str],
                 buckets: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        if buckets:
            self.buckets = tuple(sorted(buckets))
        elif tokenizer.max_seq_length is not None:
            self.buckets = tuple(length_buckets(tokenizer.max_seq_length))
        else:
            raise DataError("a tokenizer without max_seq_length needs explicit data.buckets")

    def column(self, texts: Sequence[str], c: int, rows: int | None = None
               ) -> dict[str, np.ndarray]:
        """int32 ``input_ids``, ``segment_ids``, ``positions`` ``[n, T]`` of column ``c``.

        ``n`` = ``len(texts)``, or ``rows`` with all-padding rows appended.
        """
        ids = self.tokenizer.encode(list(texts), prompt=self.prompts[c] or None)
        longest = max(len(x) for x in ids)
        width = bucket_for(longest, self.buckets)
        if width < longest:
            raise DataError(f"a text of column {c} has {longest} tokens, more than the largest "
                            f"bucket {self.buckets[-1]}; raise data.buckets or lower "
                            "data.max_seq_length")
        return self.tokenizer.pad(ids, buckets=(width,), pad_batch_to=rows)

    def __call__(self, rows: Sequence[tuple[str, ...]]) -> list[dict[str, np.ndarray]]:
        return [self.column([r[c] for r in rows], c) for c in range(len(self.prompts))]


class PairBatches(EpochPosition):
    """Deterministic, resumable iterator of global batches (this host's rows of each column);
    the position and its checks are :class:`~tarka_jax.train.data.EpochPosition`'s."""

    count_key = "num_rows"

    def __init__(self, rows: Sequence[tuple[str, ...]], tokenize: ColumnTokenizer,
                 batch_size: int, seed: int, process_index: int = 0, process_count: int = 1):
        super().__init__(len(rows), batch_size, seed, process_index, process_count, "rows")
        self.rows = list(rows)
        self.tokenize = tokenize
        self._plan_epoch, self._plan = None, []

    def plan(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch`` (row indices); cached for the current epoch."""
        if self._plan_epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
            self._plan = no_duplicate_batches(self.rows, order.tolist(), self.batch_size)
            self._plan_epoch = epoch
            if not self._plan:
                raise DataError(f"no batch of {self.batch_size} rows without a repeated text "
                                "can be formed; lower data.batch_size")
        return self._plan

    def global_indices(self) -> list[int]:
        """Row indices of the next global batch (no advance)."""
        return self.plan(self.epoch)[self.index]

    def __next__(self) -> list[dict[str, np.ndarray]]:
        batch = self.tokenize([self.rows[i] for i in self.global_indices()])
        self.advance(len(self.plan(self.epoch)))
        rows = self.local_rows()
        return [{k: v[rows] for k, v in col.items()} for col in batch]

"""What the engine runs on: an :class:`~tarka_jax.Embedder`'s planner, placement and programs.

:class:`Forward` is the engine's one view of the model: plan token ids into passes with the
Embedder's own shape policy (so the server packs exactly as ``Embedder.encode`` does), run a
pass on every device of the Embedder's placement, and list every pass shape the policy can
produce, so that start-up compiles them all (:meth:`warm_up`) and serving compiles none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np

from tarka_jax.errors import UsageError
from tarka_jax.inference import batching, passes
from tarka_jax.inference.embedder import Embedder


class Forward:
    """Plans and runs passes for one Embedder (a single process; every local device)."""

    def __init__(self, model: Embedder):
        if model.placement.spans_processes:
            raise UsageError("tarka-jax serve runs on one host's devices; a mesh over several "
                             "processes is not supported (run one server per host)")
        self.model = model
        self.embedding_dim = model.embedding_dim
        self._seen: set[tuple] = set()

    def _policy(self) -> dict:
        m = self.model
        return dict(pad_id=m.tokenizer.pad_token_id, row_multiple=m._row_multiple,
                    devices=m._devices, pass_tokens=m.pass_tokens)

    def plan(self, ids: Sequence[np.ndarray], batch_size: int) -> list[batching.Pass]:
        """Packed passes for ``ids``, as ``Embedder.encode`` plans them."""
        m = self.model
        return batching.plan_packed(ids, batch_size, m.pack_width_sets, segments=m.pack_segments,
                                    slot_cost=m._slot_cost, **self._policy())

    def shapes(self, batch_size: int) -> list[tuple[int, int, int]]:
        """Every ``(rows, width, texts per row)`` :meth:`plan` can return: each width of the
        candidate sets, each row count up to that width's full pass."""
        m, policy = self.model, self._policy()
        full = -(-batch_size // m._devices) * m._devices
        counts = batching.row_counts(full, m._row_multiple, m._devices)
        out = []
        for width in sorted({w for widths in m.pack_width_sets for w in widths}):
            most = batching.pass_rows(width, full, policy["pass_tokens"], m._row_multiple,
                                      m._devices)
            segments = m.pack_segments or batching.segments_for(width)
            out += [(rows, width, segments) for rows in counts if rows <= most]
        return out

    def is_new(self, plan: batching.Pass, tokens: bool) -> bool:
        rows, width = plan.arrays["input_ids"].shape
        key = (tokens, rows, width, 1 if tokens else plan.segments)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def run(self, plan: batching.Pass, tokens: bool):
        """Dispatch one pass (asynchronous): ``[rows, texts per row, dim]`` sentence
        embeddings *before* the model's L2 normalisation (so whole texts and chunked windows,
        which are averaged first, share passes and programs; the service normalises), or
        ``[rows, width, hidden]`` token embeddings."""
        m = self.model
        if not tokens:
            return passes._forward(m, plan.arrays, plan.segments, normalize=False)
        arrays = m.placement.put_batch(
            {k: plan.arrays[k] for k in ("input_ids", "segment_ids", "positions")})
        with m.placement.context():
            return passes._tokens_jit(m.params, arrays, m.config, dtype=m.dtype,
                                      attention=m.attention)

    def warm_up(self, batch_size: int, token_embeddings: bool = True,
                progress: Callable[[int, int], None] | None = None) -> int:
        """Compile every shape (a dummy pass each); returns how many programs."""
        jobs = [(s, False) for s in self.shapes(batch_size)]
        if token_embeddings:
            jobs += [(s, True) for s in self.shapes(batch_size)]
        for done, ((rows, width, segments), tokens) in enumerate(jobs):
            plan = _dummy_pass(rows, width, segments, self.model.tokenizer.pad_token_id)
            self.is_new(plan, tokens)
            jax.block_until_ready(self.run(plan, tokens))
            if progress is not None:
                progress(done + 1, len(jobs))
        return len(jobs)


def _dummy_pass(rows: int, width: int, segments: int, pad_id: int) -> batching.Pass:
    """One text filling each row: what a program of this shape needs to compile."""
    arrays = {"input_ids": np.full((rows, width), pad_id, np.int32),
              "segment_ids": np.ones((rows, width), np.int32),
              "positions": np.broadcast_to(np.arange(width, dtype=np.int32), (rows, width)).copy()}
    empty = np.zeros(0, np.int64)
    return batching.Pass(arrays, segments, empty, empty, empty)


__all__ = ["Forward"]

"""The batching engine: one thread that packs every waiting request's texts into passes.

Requests (:class:`Job`: token ids, already checked) wait in one FIFO queue. The engine thread
takes texts from the front of it, from as many requests as fit, until ``max_batch_tokens``
real tokens (a *step*); the Embedder's planner (:func:`tarka_jax.inference.batching.plan_packed`)
packs the step into passes of at most ``pass_tokens`` token slots per device (CPU) or
``batch_size`` rows (accelerators), texts of different requests sharing rows; each pass runs on
every local device (the Embedder's placement) and each embedding goes back to its request at
its index. A request is answered as soon as its last text is computed, not at the end of the
step.

The device never waits on HTTP: the thread only blocks on the queue when it is empty, and
passes are pipelined (pass i+1 is dispatched before pass i's result is read), across steps too:
the next step is gathered and planned while the last pass of this one runs. Texts of a request
whose client went away (:meth:`Job.cancel`) are dropped when the engine reaches them, before
they are planned. An error in a pass fails the requests with texts in it (424) and the engine
goes on.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np

from tarka_jax.inference import batching
from tarka_jax.serve import apierrors
from tarka_jax.serve.device import Forward
from tarka_jax.serve.metrics import Metrics


@dataclasses.dataclass(eq=False)
class Job:
    """One request's model inputs: pooled embeddings, or every token's (``tokens``).

    ``on_done(job)`` runs on the engine thread once: with ``out`` filled (pooled: float32
    ``[n, dim]``; tokens: one ``[tokens_i, hidden]`` array per input), or with ``error``.
    """

    ids: list[np.ndarray]
    on_done: Callable[[Job], None]
    tokens: bool = False
    out: object = None
    error: Exception | None = None
    cancelled: bool = False
    taken: int = 0  # inputs handed to the planner
    left: int = 0  # inputs not computed yet
    enqueued: float = 0.0

    def cancel(self) -> None:
        """The client is gone: inputs not yet planned never reach the device."""
        self.cancelled = True


@dataclasses.dataclass
class _Pass:
    units: list[tuple[Job, int]]  # the step's inputs; plan.texts index into it
    plan: batching.Pass
    tokens: bool
    real_tokens: int


class Engine:
    """The loop; :meth:`submit` from any thread, :meth:`start` / :meth:`stop` around it."""

    def __init__(self, forward: Forward, *, max_batch_tokens: int, batch_size: int,
                 metrics: Metrics):
        self.forward = forward
        self.max_batch_tokens = int(max_batch_tokens)
        self.batch_size = int(batch_size)
        self.metrics = metrics
        self._cond = threading.Condition()
        self._jobs: collections.deque[Job] = collections.deque()
        self._queued = 0  # inputs waiting (not yet planned)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.tokens_per_second = 0.0  # recent throughput (Retry-After estimates)

    # ---- the outside -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tarka-serve-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        n = len(job.ids)
        job.left = n
        job.enqueued = time.perf_counter()
        job.out = ([None] * n if job.tokens
                   else np.empty((n, self.forward.embedding_dim), np.float32))
        with self._cond:
            if self._stopping:
                raise apierrors.unhealthy("the server is shutting down")
            self._jobs.append(job)
            self._queued += n
            self.metrics.queue_texts.set(self._queued)
            self._cond.notify()

    @property
    def queued_tokens(self) -> int:
        with self._cond:
            return sum(int(sum(len(x) for x in j.ids[j.taken:])) for j in self._jobs)

    # ---- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if not self._jobs and self._stopping:
                    return
            self._run_available()

    def _run_available(self) -> None:
        """Run passes until the queue is empty, each dispatched before the last is read."""
        pending = None
        for p in self._passes():
            current = self._dispatch(p)
            if pending is not None:
                self._finish(*pending)
            pending = current
        if pending is not None:
            self._finish(*pending)

    def _passes(self) -> Iterator[_Pass]:
        while True:
            units = self._gather()
            if not units:
                return
            start = time.perf_counter()
            planned = self._plan([u for u in units if not u[0].tokens], tokens=False)
            planned += self._plan([u for u in units if u[0].tokens], tokens=True)
            self.metrics.stage.labels("plan").observe(time.perf_counter() - start)
            yield from planned

    def _gather(self) -> list[tuple[Job, int]]:
        """The next step: inputs from the front of the queue up to the token budget (at
        least one); cancelled or failed requests' inputs are dropped here."""
        units, tokens = [], 0
        with self._cond:
            while self._jobs:
                job = self._jobs[0]
                if job.cancelled or job.error is not None:
                    left = len(job.ids) - job.taken
                    self._queued -= left
                    if job.cancelled:
                        self.metrics.dropped.inc(left)
                    self._jobs.popleft()
                    continue
                if job.taken == 0:
                    self.metrics.stage.labels("queue").observe(time.perf_counter() - job.enqueued)
                while job.taken < len(job.ids):
                    n = len(job.ids[job.taken])
                    if units and tokens + n > self.max_batch_tokens:
                        break
                    units.append((job, job.taken))
                    tokens += n
                    job.taken += 1
                if job.taken < len(job.ids):
                    break
                self._jobs.popleft()
            self._queued -= len(units)
            self.metrics.queue_texts.set(self._queued)
        return units

    def _plan(self, units: list[tuple[Job, int]], tokens: bool) -> list[_Pass]:
        if not units:
            return []
        ids = [job.ids[i] for job, i in units]
        plan = self.forward.plan(ids, self.batch_size)
        return [_Pass(units, p, tokens, int(sum(len(ids[k]) for k in p.texts))) for p in plan]

    def _dispatch(self, p: _Pass):
        """Start ``p`` on the devices (asynchronous); None result when nobody wants it."""
        start = time.perf_counter()
        if all(p.units[k][0].cancelled for k in p.plan.texts):
            self.metrics.dropped.inc(len(p.plan.texts))
            return p, None, start
        try:
            new = self.forward.is_new(p.plan, p.tokens)
            out = self.forward.run(p.plan, p.tokens)
            if new:
                jax.block_until_ready(out)
                self.metrics.compiles.labels("serving").inc()
        except Exception as e:  # noqa: BLE001  (one bad pass never stops the engine)
            out = e
        self.metrics.stage.labels("dispatch").observe(time.perf_counter() - start)
        return p, out, start

    def _finish(self, p: _Pass, out, start: float) -> None:
        """Read ``p``'s result and hand each input's embedding to its request."""
        if out is None:
            return
        t0 = time.perf_counter()
        try:
            if isinstance(out, Exception):
                raise out
            result = np.asarray(out)
        except Exception as e:  # noqa: BLE001
            self._fail(p, e)
            return
        t1 = time.perf_counter()
        self.metrics.stage.labels("device").observe(t1 - t0)
        rows, width = p.plan.arrays["input_ids"].shape
        self.metrics.observe_pass(p.real_tokens, len(p.plan.texts), rows * width)
        elapsed = t1 - start
        if elapsed > 0:
            rate = p.real_tokens / elapsed
            self.tokens_per_second = rate if not self.tokens_per_second else (
                0.8 * self.tokens_per_second + 0.2 * rate)
        segments = p.plan.arrays["segment_ids"]
        for k, r, s in zip(p.plan.texts, p.plan.row, p.plan.slot):
            job, i = p.units[k]
            if job.error is not None:
                continue
            if p.tokens:
                job.out[i] = np.array(result[r][segments[r] == s + 1], np.float32)
            else:
                job.out[i] = result[r, s]
            job.left -= 1
            if job.left == 0:
                self._done(job)
        self.metrics.stage.labels("scatter").observe(time.perf_counter() - t1)

    def _fail(self, p: _Pass, error: Exception) -> None:
        message = " ".join(str(error).split())[:500] or type(error).__name__
        for k in p.plan.texts:
            job = p.units[k][0]
            if job.error is None:
                job.error = apierrors.backend(message)
                self._done(job)

    def _done(self, job: Job) -> None:
        try:
            job.on_done(job)
        except Exception:  # noqa: BLE001  (a callback's failure is the request's, not ours)
            pass


__all__ = ["Engine", "Job"]

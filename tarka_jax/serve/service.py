"""Between the HTTP routes and the engine: settings, admission, prompts, waiting, finishing.

A request's life: admitted under ``--max-concurrent-requests`` (else 429 with Retry-After),
tokenised on a worker thread (:mod:`tarka_jax.serve.tokens`; the event loop never tokenises),
submitted to the :class:`~tarka_jax.serve.engine.Engine`, awaited while watching the client's
connection (a client that goes away cancels its texts), then finished as ``Embedder.encode``
finishes: the model's normalisation (or, chunked "mean", the token-weighted mean of the windows
first: :func:`tarka_jax.inference.chunked.mean_of_windows`), Matryoshka truncation, then the
request's normalisation (:func:`tarka_jax.nn.numerics.l2_normalize`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tarka_jax.errors import TarkaError
from tarka_jax.inference.chunked import mean_of_windows
from tarka_jax.inference.embedder import Embedder
from tarka_jax.nn.numerics import l2_normalize
from tarka_jax.serve import apierrors
from tarka_jax.serve.device import Forward
from tarka_jax.serve.engine import Engine, Job
from tarka_jax.serve.metrics import Metrics
from tarka_jax.serve.tokens import Encoded, RequestTokenizer
from tarka_jax.text.chunking import DEFAULT_MAX_CHUNKS, ChunkingSpec


@dataclasses.dataclass(frozen=True)
class Settings:
    """The server's limits and defaults (the ``tarka-jax serve`` flags; docs/serve.md)."""

    model_name: str
    max_batch_tokens: int = 16384
    max_client_batch_size: int = 32
    max_concurrent_requests: int = 512
    payload_limit: int = 2_000_000
    auto_truncate: bool = False
    chunking: str | None = None  # None / "truncate": TEI's rule; "mean"
    chunk_overlap: int = 0
    max_chunks: int = DEFAULT_MAX_CHUNKS
    prompt_name: str | None = None
    batch_size: int = 32
    api_key: str | None = None
    warm_up_token_embeddings: bool = True


class ClientGone(TarkaError):
    """The client closed its connection before its answer was ready."""


class Service:
    """The model behind the routes: one engine thread, one tokenising pool."""

    def __init__(self, settings: Settings, model: Embedder, metrics: Metrics):
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.max_input_tokens = model.max_seq_length
        if settings.prompt_name is not None:
            self.prompt(settings.prompt_name)  # refuse an unknown default at start-up
        self.chunking_spec(None)  # and bad chunking settings
        self.tokenizer = RequestTokenizer(model.tokenizer, self.max_input_tokens)
        self.forward = Forward(model)
        self.engine = Engine(self.forward, max_batch_tokens=settings.max_batch_tokens,
                             batch_size=settings.batch_size, metrics=metrics)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="tarka-serve-tokenize")
        self._in_flight = 0
        self.status = "loading"
        self.ready = threading.Event()

    # ---- life ------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Compile every pass shape, then start the engine (``/health`` says ready after)."""
        def progress(done, total):
            self.status = f"warming up: compiled {done} of {total} programs"
            self.metrics.compiles.labels("warmup").inc()

        self.status = "warming up"
        self.forward.warm_up(self.settings.batch_size, self.settings.warm_up_token_embeddings,
                             progress)
        self.engine.start()
        self.status = "ready"
        self.metrics.ready.set(1)
        self.ready.set()

    def close(self, timeout: float | None = 30.0) -> None:
        self.engine.stop(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- admission -------------------------------------------------------------------------

    def check_ready(self) -> None:
        if not self.ready.is_set():
            raise apierrors.unhealthy(f"not ready: {self.status}")

    @contextlib.contextmanager
    def admitted(self):
        """One of ``--max-concurrent-requests`` places, or 429 with a Retry-After estimate."""
        self.check_ready()
        if self._in_flight >= self.settings.max_concurrent_requests:
            rate = self.engine.tokens_per_second
            wait = self.engine.queued_tokens / rate if rate > 0 else 1.0
            raise apierrors.overloaded(int(min(60, max(1, math.ceil(wait)))))
        self._in_flight += 1
        self.metrics.in_flight.set(self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.set(self._in_flight)

    # ---- request pieces --------------------------------------------------------------------

    def prompt(self, prompt_name: str | None) -> str | None:
        """The prompt string: the request's name, else ``--prompt-name``, else the model's
        default (``Embedder.encode``'s rule)."""
        try:
            return self.model._resolve_prompt(None, prompt_name or self.settings.prompt_name)
        except TarkaError as e:
            raise apierrors.validation(f"`prompt_name`: {e}") from None

    def check_dimensions(self, dimensions: int | None) -> int | None:
        """TEI's rule: positive, at most the embedding's size."""
        if dimensions is None:
            return None
        if dimensions <= 0:
            raise apierrors.validation("`dimensions` should be positive")
        if dimensions > self.model.embedding_dim:
            raise apierrors.validation(
                f"`dimensions` should be smaller than the maximum embedding dimension "
                f"({self.model.embedding_dim}); got {dimensions}")
        return dimensions

    def chunking_spec(self, mode: str | None) -> ChunkingSpec:
        """The request's chunking, else ``--chunking``, else TEI's truncate-or-refuse."""
        s = self.settings
        try:
            return ChunkingSpec.parse(mode or s.chunking, s.chunk_overlap, s.max_chunks)
        except TarkaError as e:
            raise apierrors.validation(str(e)) from None

    async def tokenize(self, texts: list[str], prompt: str | None, truncate: bool | None,
                       direction: str | None, chunking: str | None = None) -> Encoded:
        """Model inputs of ``texts`` on a worker thread: truncated (or refused) as TEI does,
        or in windows when the request (or ``--chunking``) asks for chunking."""
        spec = self.chunking_spec(chunking)
        truncate = self.settings.auto_truncate if truncate is None else truncate
        if spec.windows:
            work = lambda: self.tokenizer.windows(texts, prompt, spec)
        else:
            work = lambda: self.tokenizer.encode(texts, prompt, truncate=truncate,
                                                 direction=direction)
        start = time.perf_counter()
        encoded = await asyncio.get_running_loop().run_in_executor(self._pool, work)
        self.metrics.stage.labels("tokenize").observe(time.perf_counter() - start)
        self.metrics.truncated.inc(encoded.truncated)
        if encoded.windows is not None:
            self.metrics.chunked.inc(int((np.bincount(encoded.windows.text_index) > 1).sum()))
        return encoded

    async def token_table(self, texts: list[str], prompt: str | None,
                          add_special_tokens: bool) -> list[list[dict]]:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: self.tokenizer.tokens(texts, prompt, add_special_tokens))

    async def run(self, encoded: Encoded, disconnected: Callable[[], Awaitable[None]],
                  tokens: bool = False):
        """The engine's output for ``encoded`` (pooled ``[n, dim]`` or per-input token arrays);
        :class:`ClientGone` if ``disconnected()`` returns first (the texts are cancelled)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_done(job: Job) -> None:
            loop.call_soon_threadsafe(_resolve, done, job)

        job = Job(encoded.ids, on_done, tokens=tokens)
        self.engine.submit(job)
        watcher = asyncio.ensure_future(disconnected())
        try:
            finished, _ = await asyncio.wait({done, watcher},
                                             return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if done not in finished:
            job.cancel()
            raise ClientGone()
        if job.error is not None:
            raise job.error
        self.metrics.tokens.inc(encoded.tokens)
        return job.out

    def combine(self, encoded: Encoded, raw: np.ndarray) -> np.ndarray:
        """The engine's rows (before the model's normalisation) -> the model's embeddings:
        one per text, or chunked "chunks" one per window."""
        normalize = self.model.config.normalize
        if encoded.chunking == "mean":
            win = encoded.windows
            return mean_of_windows(raw, win.text_index, win.lengths, encoded.n_texts, normalize)
        return l2_normalize(raw) if normalize else raw

    @staticmethod
    def finish(out: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
        """``Embedder.encode``'s order: truncate to ``dimensions``, then L2-normalise."""
        if dimensions:
            out = out[:, :dimensions]
        if normalize:
            out = l2_normalize(out)
        return np.ascontiguousarray(out, dtype=np.float32)


def _resolve(future: asyncio.Future, job: Job) -> None:
    if not future.done():
        future.set_result(job)


__all__ = ["ClientGone", "Service", "Settings"]

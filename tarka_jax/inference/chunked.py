"""Texts -> embeddings under a chunking mode, and what was cut: the Embedder's encode core.

Why a module: with ``chunking="truncate"`` (the default, sentence-transformers' rule) a
text is one model input cut at ``max_seq_length``; with ``"mean"`` or ``"chunks"`` it is
split into windows (:mod:`tarka_jax.text.chunking`) and every window rides in the same
packed passes as the short texts (:mod:`tarka_jax.inference.passes`). Then:

* ``"mean"``: a text's embedding is the token-weighted mean of its windows' head outputs
  (before the model's L2 normalisation; a window weighs its token count, prompt and
  special tokens included), then the model's normalisation. The Dense head is affine
  (identity activations: every Gemma embedding checkpoint) and the weights sum to 1,
  so this equals mean-pooling all the windows' tokens together and applying the head
  once; with a ``tanh`` Dense it is the mean of the head's outputs. A text that fits
  is one window: its truncated embedding (to float rounding).
* ``"chunks"``: every window's embedding (normalised as any embedding) with its text,
  its number and its token / character spans: :class:`ChunkedEmbeddings`.

What was cut is counted per call in an :class:`EncodeReport` the caller passes
(``encode(..., report=r)``): safe when several threads encode at once, each with its
own report (nothing is kept on the model).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from tarka_jax.inference import passes
from tarka_jax.nn.numerics import l2_normalize
from tarka_jax.text.chunking import ChunkingSpec, split_windows, truncated_texts


class ChunksCutWarning(UserWarning):
    """Some texts were longer than ``max_chunks`` windows (a ``"mean"`` / ``"chunks"`` call)."""


@dataclasses.dataclass
class EncodeReport:
    """What one ``encode`` call did; pass a new one to each call (``report=``), read it after.

    Attributes:
      texts: texts encoded.
      inputs: model inputs run: one per text when truncating, one per window when chunking.
      tokens: tokens in those inputs (prompt and special tokens included, padding not).
      truncated: input indices of the texts not embedded whole: longer than
        ``max_seq_length`` (``chunking="truncate"``), or than ``max_chunks`` windows
        (``"mean"`` / ``"chunks"``). ``len(report.truncated)`` is the count.
      chunking: the mode the call ran with.
      max_seq_length: the tokens of one model input (a window) in that call.
      max_chunks: the most windows per text in that call (chunking modes).
    """

    texts: int = 0
    inputs: int = 0
    tokens: int = 0
    truncated: list[int] = dataclasses.field(default_factory=list)
    chunking: str = "truncate"
    max_seq_length: int | None = None
    max_chunks: int | None = None

    def summary(self) -> str | None:
        """One line saying how many texts were cut and where; None when none was."""
        if not self.truncated:
            return None
        n = f"{len(self.truncated)} of {self.texts} texts"
        if self.chunking == "truncate":
            return (f"{n} were longer than max_seq_length ({self.max_seq_length} tokens) and "
                    "were truncated (chunking 'mean' or 'chunks' embeds them whole)")
        return (f"{n} were longer than max_chunks={self.max_chunks} windows of "
                f"{self.max_seq_length} tokens: each was embedded from its first "
                f"{self.max_chunks} windows")


@dataclasses.dataclass(frozen=True)
class ChunkedEmbeddings:
    """``encode(..., chunking="chunks")``: one row per window, texts in input order.

    Attributes:
      embeddings: float32 ``[n_windows, dim]`` (after ``truncate_dim``,
        ``normalize_embeddings`` and ``precision``, as ``encode``'s output; a
        ``jax.Array`` with ``convert_to_tensor=True``).
      text_index: int64 ``[n_windows]``, the input index of each window's text.
      chunk_index: int64 ``[n_windows]``, the window's number within its text (0, 1, ...).
      token_spans: int64 ``[n_windows, 2]``, ``[start, end)`` in the text's own tokens
        (prompt and special tokens not counted).
      char_spans: int64 ``[n_windows, 2]``, ``[start, end)`` into the text (a Python
        ``str``, code points): ``text[start:end]`` is the window's text.
    """

    embeddings: Any
    text_index: np.ndarray
    chunk_index: np.ndarray
    token_spans: np.ndarray
    char_spans: np.ndarray

    def __len__(self) -> int:
        return len(self.text_index)

    def of_text(self, i: int) -> np.ndarray:
        """Row numbers of text ``i``'s windows (in order): ``embeddings[c.of_text(i)]``."""
        return np.flatnonzero(self.text_index == i)

    def with_embeddings(self, embeddings) -> ChunkedEmbeddings:
        return dataclasses.replace(self, embeddings=embeddings)

    @classmethod
    def empty(cls, rows: np.ndarray) -> ChunkedEmbeddings:
        """No windows (no texts): ``rows`` is the ``[0, dim]`` embeddings array."""
        none, spans = np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
        return cls(rows, none, none, spans, spans)


def embed_texts(model, texts: list[str], prompt: str | None, spec: ChunkingSpec, *,
                batch_size: int, pack: bool, show_progress_bar: bool | None,
                report: EncodeReport | None) -> np.ndarray | ChunkedEmbeddings:
    """float32 ``[len(texts), dim]`` (truncate, mean) or :class:`ChunkedEmbeddings`
    (chunks) from ``model`` (an Embedder), before any ``truncate_dim`` / quantisation."""
    if show_progress_bar is None:  # sentence-transformers' rule counts texts, not windows
        show_progress_bar = len(texts) > passes.AUTO_PROGRESS_TEXTS
    run = dict(batch_size=batch_size, pack=pack, show_progress_bar=show_progress_bar)
    if not spec.windows:
        ids = encode_truncated(model.tokenizer, texts, prompt, spec, report)
        return passes.embed_ids(model, ids, **run)
    window = model.max_seq_length or model.config.max_position_embeddings
    win = split_windows(model.tokenizer, texts, prompt=prompt, window=window,
                        overlap=spec.overlap, max_chunks=spec.max_chunks)
    said = fill_report(report, spec, len(texts), win.ids, np.flatnonzero(win.cut).tolist(),
                       window)
    if said:
        warnings.warn(said + " (raise max_chunks to embed more)", ChunksCutWarning,
                      stacklevel=3)  # the caller of encode
    out = passes.embed_ids(model, win.ids, normalize=spec.mode == "chunks", **run)
    if spec.mode == "chunks":
        return ChunkedEmbeddings(out, win.text_index, win.chunk_index, win.token_spans,
                                 win.char_spans)
    return mean_of_windows(out, win.text_index, win.lengths, len(texts),
                           model.config.normalize)


def encode_truncated(tokenizer, texts: list[str], prompt: str | None, spec: ChunkingSpec,
                     report: EncodeReport | None) -> list[list[int]]:
    """``tokenizer.encode``'s ids (cut at max_seq_length); with a ``report``, which texts
    were cut (:func:`~tarka_jax.text.chunking.truncated_texts`: work only then)."""
    ids = tokenizer.encode(texts, prompt=prompt)
    if report is not None:
        cut = truncated_texts(tokenizer, texts, ids, prompt=prompt)
        fill_report(report, spec, len(texts), ids, cut, tokenizer.max_seq_length)
    return ids


def mean_of_windows(raw: np.ndarray, text_index: np.ndarray, weights: np.ndarray,
                    n_texts: int, normalize: bool) -> np.ndarray:
    """float32 ``[n_texts, dim]``: per text, the ``weights``-weighted mean of its windows'
    rows of ``raw`` ``[n_windows, dim]`` (accumulated in float64), L2-normalised when
    ``normalize``. A text of one window gets its row back unchanged before normalising."""
    sums = np.zeros((n_texts, raw.shape[1]), np.float64)
    np.add.at(sums, text_index, raw.astype(np.float64) * weights[:, None])
    total = np.bincount(text_index, weights=weights, minlength=n_texts)[:, None]
    out = (sums / np.maximum(total, 1)).astype(np.float32)
    return l2_normalize(out) if normalize else out


def fill_report(report: EncodeReport | None, spec: ChunkingSpec, n_texts: int,
                ids: list[list[int]], truncated: list[int], window: int | None) -> str | None:
    """Record a call's texts, model inputs ``ids`` and truncated texts in ``report`` (when
    given); return :meth:`EncodeReport.summary`."""
    made = EncodeReport(n_texts, len(ids), sum(map(len, ids)), list(truncated), spec.mode,
                        window, spec.max_chunks if spec.windows else None)
    if report is not None:
        for field in dataclasses.fields(EncodeReport):
            setattr(report, field.name, getattr(made, field.name))
    return made.summary()


__all__ = ["ChunkedEmbeddings", "ChunksCutWarning", "EncodeReport", "embed_texts",
           "encode_truncated", "fill_report", "mean_of_windows"]

"""Request texts -> token ids, with TEI's truncation rules, off the event loop.

The server tokenises with copies of the model's own ``tokenizers`` backend (the same
normalizer, added tokens and post-processor as :class:`~tarka_jax.Embedder`), one per
truncation side, each truncating at ``--max-input-tokens`` and never changed after start-up,
so threads may share them. A copy truncates exactly as ``Embedder.encode`` does (before the
special tokens, which every text keeps); the pieces it cut off (``Encoding.overflowing``) give
the full length, so a text too long for a request that did not ask for truncation is refused
with its real token count from one tokenisation. With chunking ("mean", "chunks") a long text
is cut into windows instead, by the Embedder's own rule
(:func:`tarka_jax.text.chunking.split_windows`), each window one model input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from tarka_jax.serve import apierrors
from tarka_jax.text.chunking import ChunkingSpec, Windows, split_windows
from tarka_jax.text.tokenizer import TextTokenizer


@dataclasses.dataclass
class Encoded:
    """A request's model inputs: int32 ids, each at most ``max_input_tokens`` long; one per
    text, or with chunking one per window (``windows`` says whose)."""

    ids: list[np.ndarray]
    tokens: int  # the ids' total length (OpenAI's usage.prompt_tokens)
    truncated: int  # texts cut: at max_input_tokens, or past max_chunks windows
    n_texts: int = 0
    windows: Windows | None = None
    chunking: str = "truncate"


class RequestTokenizer:
    """Tokenises request texts as the Embedder does, for the HTTP routes."""

    def __init__(self, tokenizer: TextTokenizer, max_input_tokens: int):
        self.tokenizer = tokenizer
        self.max_input_tokens = int(max_input_tokens)
        self.default_side = tokenizer.truncation_side
        self.num_special_tokens = tokenizer.num_special_tokens
        source = tokenizer.backend.to_str()
        self._plain = Tokenizer.from_str(source)
        self._plain.no_truncation()
        self._cut = {}
        for side in ("left", "right"):
            backend = Tokenizer.from_str(source)
            backend.enable_truncation(self.max_input_tokens, stride=0, strategy="longest_first",
                                      direction=side)
            self._cut[side] = backend

    def encode(self, texts: Sequence[str], prompt: str | None, *, truncate: bool,
               direction: str | None = None) -> Encoded:
        """Ids of ``prompt + text`` per text; a text over ``max_input_tokens`` is cut when
        ``truncate``, else refused (422, naming it and its length)."""
        side = (direction or self.default_side).lower()
        full = [prompt + t for t in texts] if prompt else list(texts)
        encodings = self._cut[side].encode_batch(full, add_special_tokens=True)
        ids, truncated = [], 0
        for i, e in enumerate(encodings):
            if e.overflowing:
                if not truncate:
                    length = len(e.ids) + sum(len(o.ids) - self.num_special_tokens
                                              for o in e.overflowing)
                    raise apierrors.too_long(i, length, self.max_input_tokens)
                truncated += 1
            ids.append(np.asarray(e.ids, np.int32))
        return Encoded(ids, sum(len(x) for x in ids), truncated, len(texts))

    def windows(self, texts: Sequence[str], prompt: str | None, spec: ChunkingSpec) -> Encoded:
        """Every text as windows of ``max_input_tokens`` (``Embedder.encode(chunking=...)``)."""
        win = split_windows(self.tokenizer, texts, prompt=prompt, window=self.max_input_tokens,
                            overlap=spec.overlap, max_chunks=spec.max_chunks)
        ids = [np.asarray(x, np.int32) for x in win.ids]
        return Encoded(ids, int(win.lengths.sum()), int(win.cut.sum()), len(texts), win,
                       spec.mode)

    def tokens(self, texts: Sequence[str], prompt: str | None,
               add_special_tokens: bool = True) -> list[list[dict]]:
        """TEI's ``/tokenize``: per token ``id``, ``text``, ``special``, ``start``, ``stop``
        (UTF-8 byte offsets into ``prompt + text``; None for special tokens), untruncated."""
        full = [prompt + t for t in texts] if prompt else list(texts)
        out = []
        for text, e in zip(full, self._plain.encode_batch(full,
                                                          add_special_tokens=add_special_tokens)):
            raw = text.encode("utf-8")
            byte_at = _byte_offsets(text)
            tokens = []
            for token_id, token, special, (start, stop) in zip(
                    e.ids, e.tokens, e.special_tokens_mask, e.offsets):
                if special:
                    tokens.append({"id": token_id, "text": token, "special": True,
                                   "start": None, "stop": None})
                else:
                    a, b = byte_at[start], byte_at[stop]
                    tokens.append({"id": token_id, "special": False, "start": a, "stop": b,
                                   "text": raw[a:b].decode("utf-8", errors="replace")})
            out.append(tokens)
        return out


def _byte_offsets(text: str) -> np.ndarray:
    """``[len(text) + 1]``: the UTF-8 byte offset of each character offset."""
    if text.isascii():
        return np.arange(len(text) + 1)
    sizes = np.fromiter((len(c.encode("utf-8")) for c in text), np.int64, len(text))
    return np.concatenate([[0], np.cumsum(sizes)])


__all__ = ["Encoded", "RequestTokenizer"]

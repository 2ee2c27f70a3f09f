"""Long texts as token windows, each one a complete model input: :func:`split_windows`.

Why a module: a text longer than ``max_seq_length`` is truncated by default (as in
sentence-transformers); with chunking it is cut into windows instead, and where the
windows start and end, and which characters each covers, is one rule used by the
Embedder, the CLI, MTEB and the corpus job (docs/long_documents.md).

A text is tokenised once, whole (prompt prepended, no truncation). With ``A`` / ``B``
the special tokens the post-processor puts before / after the text (``<bos>`` /
``<eos>`` for Gemma), ``P`` the prompt's tokens and ``W`` the window (the model's
``max_seq_length``), every window is laid out as the model would see a short text::

    [A specials] [P prompt tokens] [text tokens start:end] [B specials]      (<= W tokens)

so a window holds at most ``R = W - A - P - B`` text tokens. Window ``k`` covers text
tokens ``[k * S, min(k * S + R, T))`` of the text's ``T``, with stride ``S = R - overlap``
(consecutive windows share ``overlap`` tokens); the last window may be shorter. A
text that fits (``T <= R``) is one window, token for token the ids truncation gives it;
so is window 0 of any text (right truncation keeps the same first tokens).

The prompt's tokens are the leading tokens that end inside the prompt. A token that
straddles the prompt's end (Gemma's BPE merges a prompt's trailing space into the
text's first word: ``"query: h..."`` -> ``"▁h"``) belongs to the text.

Spans. ``token_spans[w] = (start, end)`` indexes the text's own tokens (prompt and
specials excluded); ``char_spans[w] = (start, end)`` indexes the Python ``str`` (code
points) from the first character of the window's first token to the last character
of its last token, from the tokenizer's offsets, so ``text[start:end]`` is that
window's text. Offsets are per character: a character that byte-level or byte-fallback
tokens split across two windows lies in both spans, never half in one.

Bounded work. At most ``max_chunks`` windows per text (default
:data:`DEFAULT_MAX_CHUNKS`); a longer text keeps its first ``max_chunks`` windows and is
reported as cut (``Windows.cut``). Before tokenising, a text is cut at
``2 * L * (max_chunks * W + 1)`` characters (``L``, the longest vocabulary entry, bounds
the characters one token covers; 2 allows for a normaliser composing characters), which
is past the last window for any text whose characters the normaliser does not delete;
a text cut there is reported as cut too.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from tarka_jax.errors import UsageError

#: ``chunking=`` values: sentence-transformers' truncation, one mean embedding per text,
#: one embedding per window.
MODES = ("truncate", "mean", "chunks")
#: Windows per text unless ``max_chunks=`` says otherwise (2048-token windows: 131k tokens).
DEFAULT_MAX_CHUNKS = 64
_MOST_CHUNKS = 1 << 20  # a ceiling on max_chunks itself (an int, not a size: sanity only)


@dataclasses.dataclass(frozen=True)
class ChunkingSpec:
    """Validated chunking settings; :meth:`as_dict` is what a manifest records."""

    mode: str = "truncate"
    overlap: int = 0
    max_chunks: int = DEFAULT_MAX_CHUNKS

    @classmethod
    def parse(cls, mode: str | None = None, overlap=0,
              max_chunks=DEFAULT_MAX_CHUNKS) -> ChunkingSpec:
        """From ``encode``'s keywords; None means "truncate".

        Raises:
          UsageError: an unknown mode, a negative overlap, ``max_chunks`` not in
            ``1..2**20`` (each names the argument and the value).
        """
        mode = "truncate" if mode is None else mode
        if mode not in MODES:
            raise UsageError(f"chunking must be one of {', '.join(map(repr, MODES))} "
                             f"(or None: truncate), got {mode!r}")
        return cls(mode, _count("chunk_overlap", overlap, 0),
                   _count("max_chunks", max_chunks, 1, _MOST_CHUNKS))

    @property
    def windows(self) -> bool:
        """Whether texts are split into windows (``"mean"`` or ``"chunks"``)."""
        return self.mode != "truncate"

    def as_dict(self) -> dict:
        return {"mode": self.mode, "overlap": self.overlap, "max_chunks": self.max_chunks}

    def encode_kwargs(self) -> dict:
        """``Embedder.encode``'s keywords for these settings."""
        return {"chunking": self.mode, "chunk_overlap": self.overlap,
                "max_chunks": self.max_chunks}


def add_arguments(parser, modes: Sequence[str] = MODES) -> None:
    """``--chunking``, ``--chunk-overlap``, ``--max-chunks`` on a subcommand's parser
    (read back with :func:`from_arguments`)."""
    parser.add_argument("--chunking", choices=modes, default="truncate",
                        help="texts longer than --max-seq-length: truncate (default, as "
                             "sentence-transformers), mean (one embedding per text, the mean of "
                             "its windows)" + (", chunks (one embedding per window)"
                                               if "chunks" in modes else ""))
    parser.add_argument("--chunk-overlap", type=int, default=0, metavar="TOKENS",
                        help="tokens consecutive windows share (default 0)")
    parser.add_argument("--max-chunks", type=int, default=DEFAULT_MAX_CHUNKS, metavar="N",
                        help=f"most windows per text (default {DEFAULT_MAX_CHUNKS}); a longer "
                             "text keeps its first N and is reported")


def from_arguments(args) -> ChunkingSpec:
    """The settings :func:`add_arguments` parsed (validated)."""
    return ChunkingSpec.parse(args.chunking, args.chunk_overlap, args.max_chunks)


def _count(name: str, value, lo: int, hi: int | None = None) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or value < lo or (hi is not None and value > hi):
        span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise UsageError(f"{name} must be an int in {span}, got {value!r}")
    return int(value)


def window_bounds(n_tokens: int, room: int, overlap: int,
                  max_chunks: int) -> tuple[list[tuple[int, int]], bool]:
    """``[start, end)`` of each window over ``n_tokens`` text tokens, and whether the
    text goes on past the last one (more than ``max_chunks`` windows).

    ``room`` text tokens fit in a window; windows step by ``room - overlap``. A text
    of no tokens is one empty window ``(0, 0)`` (it still embeds its prompt).
    """
    if room < 1:
        raise UsageError(f"no room for text in a window ({room} tokens)")
    if overlap >= room:
        raise UsageError(f"chunk_overlap={overlap} must be smaller than the {room} text "
                         "tokens a window holds (max_seq_length minus the prompt and "
                         "special tokens)")
    bounds, start, stride = [], 0, room - overlap
    while True:
        end = min(start + room, n_tokens)
        bounds.append((start, end))
        if end >= n_tokens:
            return bounds, False
        if len(bounds) == max_chunks:
            return bounds, True
        start += stride


@dataclasses.dataclass(frozen=True)
class Windows:
    """The windows of a list of texts, texts in input order, each text's windows in order.

    ``ids[w]`` is window ``w``'s model input; ``text_index[w]`` / ``chunk_index[w]`` its
    text and its number within that text; spans as the module docstring says
    (int64 ``[n_windows, 2]``); ``cut[i]``: text ``i`` goes on past its last window.
    """

    ids: list[list[int]]
    text_index: np.ndarray  # int64 [n_windows]
    chunk_index: np.ndarray  # int64 [n_windows]
    token_spans: np.ndarray  # int64 [n_windows, 2]
    char_spans: np.ndarray  # int64 [n_windows, 2]
    cut: np.ndarray  # bool [n_texts]

    @property
    def lengths(self) -> np.ndarray:
        """int64 ``[n_windows]``: tokens in each window (its weight in ``"mean"``)."""
        return np.fromiter(map(len, self.ids), np.int64, len(self.ids))


def split_windows(tokenizer, texts: Sequence[str], *, prompt: str | None, window: int,
                  overlap: int = 0, max_chunks: int = DEFAULT_MAX_CHUNKS) -> Windows:
    """Every text's windows of at most ``window`` tokens (module docstring).

    Args:
      tokenizer: a :class:`~tarka_jax.text.tokenizer.TextTokenizer` (its truncation is
        not used: a copy of its backend tokenises whole texts).
      texts: already validated strs.
      prompt: prepended to every text (in every window), or None.
      window: tokens per window, special tokens and prompt included (max_seq_length).

    Raises:
      UsageError: the prompt and special tokens leave no room for text, or
        ``overlap`` is not smaller than that room.
    """
    backend, longest_token, (head, tail) = _whole_text_backend(tokenizer)
    prompt = prompt or ""
    bound = 2 * longest_token * (max_chunks * window + 1)
    encodings = backend.encode_batch([prompt + t[:bound] for t in texts],
                                     add_special_tokens=True) if texts else []
    ids, text_index, chunk_index, token_spans, char_spans = [], [], [], [], []
    cut = np.zeros(len(texts), bool)
    for i, enc in enumerate(encodings):
        content, offsets = enc.ids[head:len(enc.ids) - tail], enc.offsets[head:len(enc.ids) - tail]
        n_prompt = _prompt_tokens(offsets, len(prompt))
        room = window - head - tail - n_prompt
        if room < 1:
            raise UsageError(f"the prompt ({n_prompt} tokens) and {head + tail} special tokens "
                             f"leave no room for text in a window of {window} tokens")
        bounds, cut[i] = window_bounds(len(content) - n_prompt, room, overlap, max_chunks)
        cut[i] |= len(texts[i]) > bound
        pre, post = enc.ids[:head] + content[:n_prompt], enc.ids[len(enc.ids) - tail:]
        for k, (start, end) in enumerate(bounds):
            ids.append(pre + content[n_prompt + start:n_prompt + end] + post)
            text_index.append(i)
            chunk_index.append(k)
            token_spans.append((start, end))
            char_spans.append(_char_span(offsets[n_prompt + start:n_prompt + end], len(prompt)))
    as_spans = lambda x: np.asarray(x, np.int64).reshape(-1, 2)
    return Windows(ids, np.asarray(text_index, np.int64), np.asarray(chunk_index, np.int64),
                   as_spans(token_spans), as_spans(char_spans), cut)


def truncated_texts(tokenizer, texts: Sequence[str], ids: Sequence[Sequence[int]], *,
                    prompt: str | None) -> list[int]:
    """Indices of the texts that ``tokenizer.encode`` (``ids``) cut at ``max_seq_length``.

    A text of exactly ``max_seq_length`` tokens may fit or may have been cut: its first
    ``2 * L * (max_seq_length + 1)`` characters (more than that many tokens, module
    docstring) are tokenised whole to tell. Only those texts are tokenised again.
    """
    window = tokenizer.max_seq_length
    candidates = [i for i, x in enumerate(ids) if window is not None and len(x) >= window]
    if not candidates:
        return []
    backend, longest_token, _ = _whole_text_backend(tokenizer)
    bound = 2 * longest_token * (window + 1)
    whole = backend.encode_batch([(prompt or "") + texts[i][:bound] for i in candidates],
                                 add_special_tokens=True)
    return [i for i, enc in zip(candidates, whole) if len(enc.ids) > window]


def _prompt_tokens(offsets: Sequence[tuple[int, int]], prompt_chars: int) -> int:
    """How many leading tokens end inside the prompt (a straddling token is the text's)."""
    n = 0
    while prompt_chars and n < len(offsets) and offsets[n][1] <= prompt_chars:
        n += 1
    return n


def _char_span(offsets: Sequence[tuple[int, int]], shift: int) -> tuple[int, int]:
    """``[start, end)`` in the text (prompt removed) of tokens with these offsets."""
    if not offsets:
        return (0, 0)
    return (max(offsets[0][0] - shift, 0), max(offsets[-1][1] - shift, 0))


# A TextTokenizer truncates in its backend (a setting of the shared Rust object), so
# windows come from a copy that never truncates, made once per tokenizer.
_BACKENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _whole_text_backend(tokenizer) -> tuple[Tokenizer, int, tuple[int, int]]:
    """(untruncated copy of the backend, longest vocabulary entry in characters,
    (special tokens before, after) a text) for ``tokenizer``, cached."""
    with _LOCK:
        found = _BACKENDS.get(tokenizer)
        if found is None:
            backend = Tokenizer.from_str(tokenizer.backend.to_str())
            backend.no_truncation()
            backend.no_padding()
            longest = max(map(len, backend.get_vocab(with_added_tokens=True)), default=1)
            found = _BACKENDS[tokenizer] = (backend, max(longest, 1), _template(backend))
        return found


def _template(backend: Tokenizer) -> tuple[int, int]:
    """Special tokens the post-processor adds before and after one sequence.

    Read from ``sequence_ids`` (None on template tokens; a special token written in the
    text itself has a sequence id) of a probe with text in it.
    """
    seq = backend.encode("a b c", add_special_tokens=True).sequence_ids
    if all(s is None for s in seq):  # a normaliser that drops the probe: count all as before
        return backend.num_special_tokens_to_add(False), 0
    head = next(k for k, s in enumerate(seq) if s is not None)
    tail = next(k for k, s in enumerate(reversed(seq)) if s is not None)
    return head, tail


__all__ = ["DEFAULT_MAX_CHUNKS", "MODES", "ChunkingSpec", "Windows", "add_arguments",
           "from_arguments", "split_windows", "truncated_texts", "window_bounds"]

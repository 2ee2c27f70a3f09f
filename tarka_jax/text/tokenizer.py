"""Text -> int32 model batches, with the token ids transformers 5.x produces.

:class:`TextTokenizer` wraps a ``tokenizers.Tokenizer`` loaded from a folder's
``tokenizer.json`` and applies the same adjustments that transformers 5.x
(``TokenizersBackend``) and sentence-transformers make on load (docs/numerics.md, "Tokenizer"):

* special tokens named in ``tokenizer_config.json`` (``bos_token``, ``eos_token``, ...)
  and its ``added_tokens_decoder`` that the backend lacks are added;
* the post-processor is tokenizer.json's, whatever ``add_bos_token`` /
  ``add_eos_token`` in ``tokenizer_config.json`` say: transformers 5.24 pops those
  flags when a tokenizer.json exists (``PreTrainedTokenizerBase._from_pretrained``,
  tokenization_utils_base.py l.1818), so ``TokenizersBackend`` never rebuilds the
  post-processor (checked against ``AutoTokenizer`` in the tests). A null one adds nothing;
* truncation to ``max_seq_length`` happens *before* the post-processor, so a
  truncated text still ends with its special tokens (``tokenizers`` reserves the
  special-token budget itself);
* ``tokenizer_class`` GemmaTokenizer (EmbeddingGemma) makes transformers rebuild the
  BPE from tokenizer.json's vocab and merges with the same normalizer, which gives
  the same ids (tested); other classes with their own ``__init__`` get a warning;
* ``do_lower_case`` from ``sentence_bert_config.json`` prepends a Lowercase normalizer;
* a prompt is concatenated to the text as a string before tokenising.

A batch is a dict of int32 ``[B, T]`` arrays: ``input_ids``, ``segment_ids``
(texts numbered 1..S within a row, 0 = padding) and ``positions`` (restarting at
0 for every text). Unpacked, each row holds one text (S = 1). Packed
(``pack=True``), a row holds several texts, laid out back to back::

    texts "a b c", "d e", "f"   (lengths 3, 2, 1; row length 6)
    input_ids    [a  b  c  d  e  f ]
    segment_ids  [1  1  1  2  2  3 ]
    positions    [0  1  2  0  1  0 ]
    slots        [[0, 0], [0, 1], [0, 2]]   # (row, segment - 1) of each text

Attention keeps segments apart (token i sees j iff their segment ids are equal and
non-zero) and positions restart, so a packed text embeds exactly as it does alone.
"""

from __future__ import annotations

import bisect
import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from tokenizers import AddedToken, Tokenizer

from tarka_jax.errors import ConfigError, InputTypeError, TarkaError
from tarka_jax.files.jsonfiles import read_json
from tarka_jax.text.truncation import (
    MARGIN,
    encode_bounded,
    resolve_max_seq_length,
    vocabulary_width,
    widest_token,
)

# Named special tokens transformers adds to the backend when it lacks them.
_NAMED_SPECIAL_TOKENS = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)
# tokenizer_class values whose transformers 5.24 loading we checked gives tokenizer.json's
# ids (GemmaTokenizer rebuilds its BPE from the file's vocab/merges with the same
# normalizer and keeps the file's post-processor). Other classes with their own
# __init__ (CodeLlama, Cohere, GPT-NeoX, ...) rebuild pieces differently: warn.
_VERIFIED_CLASSES = {None, "TokenizersBackend", "PreTrainedTokenizerFast", "GemmaTokenizer",
                     "GemmaTokenizerFast"}


class TokenizerError(TarkaError):
    """A tokenizer folder or setting we cannot use."""


def check_texts(texts: Any) -> tuple[list[str], bool]:
    """Validate user input; return (list of texts, whether a single str was given).

    Raises:
      TypeError: an input that is not a str, naming its index and type.
    """
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise InputTypeError(
            f"texts must be a str or a sequence of str, got {type(texts).__name__}"
        )
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputTypeError(
                f"texts[{i}] is a {type(text).__name__}, not a str: {text!r:.60}"
            )
    return texts, False


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


def _token_content(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # serialised AddedToken
        return value.get("content")
    return str(value)


def _read_json(path: str) -> dict:
    """A JSON object file ({} when missing); a corrupt one is a TokenizerError naming it."""
    try:
        data = read_json(path) if os.path.exists(path) else {}
    except ConfigError as e:
        raise TokenizerError(str(e)) from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} must hold a JSON object")
    return data


def _with_lowercase(tokenizer_json: dict) -> dict:
    """Prepend Lowercase to the normalizer unless it has one (sentence-transformers' rule)."""
    norm = tokenizer_json.get("normalizer")
    if norm is not None and norm.get("type") == "Lowercase":
        return tokenizer_json
    if norm is not None and norm.get("type") == "Sequence":
        inner = norm.get("normalizers", [])
        if any(n.get("type") == "Lowercase" for n in inner):
            return tokenizer_json
        new = [{"type": "Lowercase"}, *inner]
    else:
        new = [{"type": "Lowercase"}] + ([norm] if norm is not None else [])
    return dict(tokenizer_json, normalizer={"type": "Sequence", "normalizers": new})


class TextTokenizer:
    """Texts -> ``{"input_ids", "segment_ids", "positions"}`` int32 ``[B, T]`` batches.

    Build it with :meth:`from_folder`. ``max_seq_length`` is the longest token
    sequence (special tokens included) a text is truncated to; None = no truncation.
    """

    def __init__(self, backend: Tokenizer, *, max_seq_length: int | None, pad_token_id: int = 0,
                 truncation_side: str = "right", widest_token: int | None = None):
        self._backend = backend
        self._widest = widest_token  # where long texts are cut; None: the backend's, when needed
        self.pad_token_id = int(pad_token_id)
        self.truncation_side = truncation_side
        self.num_special_tokens = backend.num_special_tokens_to_add(False)
        self.max_seq_length = None
        self.set_max_seq_length(max_seq_length)

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, max_seq_length: int | None = None, *,
                    max_position_embeddings: int | None = None,
                    do_lower_case: bool | None = None) -> TextTokenizer:
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json``) from a model folder.

        Args:
          folder: a Hugging Face / sentence-transformers folder (or one written by
            ``hf_to_flax``) holding ``tokenizer.json``.
          max_seq_length: truncation length. None resolves it as sentence-transformers
            does: ``sentence_bert_config.json``'s ``max_seq_length``, else the
            tokenizer's ``model_max_length`` capped at ``max_position_embeddings``.
          max_position_embeddings: the model's; None reads it from ``config.json``.
          do_lower_case: None reads it from ``sentence_bert_config.json`` (default False).
        """
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"tokenizer folder not found: {folder}")
        path = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{folder} has no tokenizer.json (tarka-jax needs the fast-tokenizer file)"
            )
        tok_config = _read_json(os.path.join(folder, "tokenizer_config.json"))
        st_config = _read_json(os.path.join(folder, "sentence_bert_config.json"))

        if do_lower_case is None:
            do_lower_case = bool(st_config.get("do_lower_case", False))
        # Edited (lowercased) files go through Python's json; others straight to Rust: Gemma's
        # 33 MB tokenizer.json took 3.6 s through json.load + from_str, 1.6 s from_file.
        tokenizer_json = _with_lowercase(_read_json(path)) if do_lower_case else None
        try:
            backend = (Tokenizer.from_str(json.dumps(tokenizer_json)) if tokenizer_json
                       else Tokenizer.from_file(path))
        except Exception as e:  # noqa: BLE001  (tokenizers raises plain Exception)
            raise TokenizerError(f"cannot load {path}: not valid JSON of a tokenizers "
                                 f"Tokenizer ({e})") from None
        backend_truncation = backend.truncation
        backend.no_truncation()
        backend.no_padding()

        _add_missing_tokens(backend, tok_config)
        if tok_config.get("tokenizer_class") not in _VERIFIED_CLASSES:
            warnings.warn(
                f"{folder}: tokenizer_class {tok_config['tokenizer_class']!r} is not one whose "
                "transformers loading tarka-jax mirrors; token ids follow tokenizer.json and may "
                "differ from AutoTokenizer's", stacklevel=2)

        if max_seq_length is None:
            max_seq_length = resolve_max_seq_length(
                tok_config, st_config, max_position_embeddings or _positions(folder), folder)
        side = tok_config.get("truncation_side") or (
            backend_truncation or {}).get("direction") or "right"
        pad = _token_content(tok_config.get("pad_token"))
        pad_id = backend.token_to_id(pad) if pad is not None else None
        return cls(backend, max_seq_length=max_seq_length,
                   pad_token_id=pad_id if pad_id is not None else 0, truncation_side=side,
                   widest_token=widest_token(tokenizer_json, backend))

    def set_max_seq_length(self, max_seq_length: int | None) -> None:
        """Change the truncation length (None = none)."""
        if max_seq_length is not None:
            max_seq_length = int(max_seq_length)
            if max_seq_length <= self.num_special_tokens:
                raise TokenizerError(
                    f"max_seq_length={max_seq_length} leaves no room for text next to the "
                    f"{self.num_special_tokens} special tokens"
                )
            self._backend.enable_truncation(max_seq_length, stride=0, strategy="longest_first",
                                            direction=self.truncation_side)
        else:
            self._backend.no_truncation()
        self.max_seq_length = max_seq_length

    @property
    def backend(self) -> Tokenizer:
        """The configured ``tokenizers.Tokenizer`` (truncation set, no padding)."""
        return self._backend

    # ---- tokenising -------------------------------------------------------------------------

    def encode(self, texts: str | Sequence[str], *, prompt: str | None = None) -> list[list[int]]:
        """Token ids of each text (prompt prepended, truncated, special tokens added)."""
        texts, _ = check_texts(texts)
        if not texts:
            return []
        limit = self.max_seq_length
        # A text of at most limit + MARGIN characters is never cut, whatever the width: the
        # vocabulary's widest token (0.6 s over a 262k vocabulary) is read only when needed.
        long = limit is not None and any(len(t) > limit + MARGIN for t in texts)
        return [e.ids for e in encode_bounded(self._backend, texts, prompt or "", limit,
                                              self.truncation_side,
                                              self.widest_token_chars if long else 1)]

    @property
    def widest_token_chars(self) -> int:
        """Characters of the longest vocabulary entry: where a long text is cut before it is
        tokenised (text/truncation.py). From tokenizer.json when it was parsed, else the
        backend's vocabulary, once."""
        if self._widest is None:
            self._widest = vocabulary_width(self._backend)
        return self._widest

    def __call__(self, texts: str | Sequence[str], *, prompt: str | None = None,
                 pack: bool = False, pad_to_multiple_of: int | None = None,
                 buckets: Sequence[int] | None = None, row_length: int | None = None,
                 max_segments: int | None = None, pad_batch_to: int | None = None,
                 ) -> dict[str, np.ndarray]:
        """Tokenise texts into one padded batch.

        Args:
          texts: a str or a sequence of str.
          prompt: string prepended to every text before tokenising.
          pack: put several texts in a row (best-fit by decreasing length); the result
            then also holds ``slots``: int32 ``[n, 2]``, the (row, segment - 1) of each
            text, so ``embed(...)[slots[:, 0], slots[:, 1]]`` is in input order.
          pad_to_multiple_of: round the row length up to a multiple of this.
          buckets: allowed row lengths (sorted); the row length becomes the
            smallest bucket that fits (takes precedence over ``pad_to_multiple_of``).
          row_length: packed row length (default: the longest text, then rounded).
          max_segments: at most this many texts per packed row.
          pad_batch_to: append all-padding rows up to this many rows.

        Returns:
          int32 ``input_ids``, ``segment_ids``, ``positions`` of shape ``[B, T]``
          (and ``slots`` when packing). Unpacked, row i is text i.
        """
        ids = self.encode(texts, prompt=prompt)
        return self.pad(ids, pack=pack, pad_to_multiple_of=pad_to_multiple_of, buckets=buckets,
                        row_length=row_length, max_segments=max_segments,
                        pad_batch_to=pad_batch_to)

    def pad(self, ids: Sequence[Sequence[int]], *, pack: bool = False,
            pad_to_multiple_of: int | None = None, buckets: Sequence[int] | None = None,
            row_length: int | None = None, max_segments: int | None = None,
            pad_batch_to: int | None = None) -> dict[str, np.ndarray]:
        """Lay out already-tokenised sequences as a batch (see :meth:`__call__`)."""
        lengths = [len(x) for x in ids]
        longest = max(lengths, default=0)
        if pack:
            target = max(longest, row_length or 0)
            if row_length is not None and row_length < longest:
                raise TokenizerError(f"row_length={row_length} is shorter than a text ({longest})")
            width = _round_length(target, pad_to_multiple_of, buckets)
            rows = pack_rows(lengths, width, max_segments)
        else:
            width = _round_length(longest, pad_to_multiple_of, buckets)
            rows = [[i] for i in range(len(ids))]
        n_rows = max(len(rows), pad_batch_to or 0)
        input_ids = np.full((n_rows, width), self.pad_token_id, np.int32)
        segment_ids = np.zeros((n_rows, width), np.int32)
        positions = np.zeros((n_rows, width), np.int32)
        slots = np.zeros((len(ids), 2), np.int32)
        for r, members in enumerate(rows):
            start = 0
            for s, i in enumerate(members):
                n = lengths[i]
                input_ids[r, start:start + n] = ids[i]
                segment_ids[r, start:start + n] = s + 1
                positions[r, start:start + n] = np.arange(n, dtype=np.int32)
                slots[i] = (r, s)
                start += n
        batch = {"input_ids": input_ids, "segment_ids": segment_ids, "positions": positions}
        if pack:
            batch["slots"] = slots
        return batch


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
            raise TokenizerError(f"a text of {n} tokens does not fit a row of {space}")
        else:
            r = len(rows)
            rows.append(([], cap(space)))
        members, most = rows[r]
        members.append(i)
        space -= n
        if space > 0 and (most is None or len(members) < most):
            bisect.insort(free, (space, r))
    return [members for members, _ in rows]


def _round_length(n: int, multiple: int | None, buckets: Sequence[int] | None) -> int:
    n = max(n, 1)
    if buckets:
        return max(bucket_for(n, sorted(buckets)), n)
    if multiple:
        return -(-n // multiple) * multiple
    return n


def _add_missing_tokens(backend: Tokenizer, tok_config: dict) -> None:
    """Add the special tokens transformers would add on load (TokenizersBackend.__init__)."""
    present = {t.content for t in backend.get_added_tokens_decoder().values()}
    decoder = tok_config.get("added_tokens_decoder") or {}
    for _, spec in sorted(decoder.items(), key=lambda kv: int(kv[0])):
        if spec.get("content") in present:
            continue
        token = AddedToken(spec["content"], single_word=spec.get("single_word", False),
                           lstrip=spec.get("lstrip", False), rstrip=spec.get("rstrip", False),
                           normalized=spec.get("normalized", True),
                           special=spec.get("special", False))
        backend.add_tokens([token])
        present.add(spec["content"])
    names = [_token_content(tok_config.get(k)) for k in _NAMED_SPECIAL_TOKENS]
    for key in ("extra_special_tokens", "additional_special_tokens"):
        extra = tok_config.get(key)
        if isinstance(extra, dict):
            extra = list(extra.values())
        names += [_token_content(t) for t in extra or ()]
    missing = [n for n in dict.fromkeys(names) if n and n not in present]
    if missing:
        backend.add_special_tokens(
            [AddedToken(n, special=True, normalized=False) for n in missing])


def _positions(folder: str) -> int | None:
    """``max_position_embeddings`` of the folder's config.json (or its text_config)."""
    model_config = _read_json(os.path.join(folder, "config.json"))
    text_config = model_config.get("text_config")
    return model_config.get("max_position_embeddings") or (
        text_config.get("max_position_embeddings") if isinstance(text_config, dict) else None)

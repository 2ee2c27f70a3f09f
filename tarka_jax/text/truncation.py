"""Truncation: how many tokens a folder keeps, and a long text cut before it is tokenised.

:func:`resolve_max_seq_length` is the length (sentence-transformers' rule, capped by the
model's positions). The rest of this docstring is about the cut.

Why: tokenising costs time and memory in the text's length, and truncation to
``max_seq_length`` happens after it: one 50 MB line cost 70 s and 7.9 GB to keep 256
tokens. :func:`encode_bounded` gives the backend at most a bounded prefix of each text,
with the same token ids. Right truncation only (the default, and EmbeddingGemma's): BPE
merges equal pairs leftmost first, so inside one pre-token a run (of spaces: 31 ``▁``
per token) is split in steps aligned to where it starts. A prefix keeps that start; a
suffix moves it and can change every token of the run (measured), so a text truncated
on the left is tokenised whole, as before.

The bound. Let ``L`` be ``max_seq_length`` (the special tokens the post-processor adds
are outside the content budget, so at most ``L`` content tokens are kept), ``M`` =
:data:`MARGIN` and ``W`` the most characters one token can cover: the longest vocabulary
entry or added token (every token the model emits is one of those strings, or a single
unknown character or byte of one; EmbeddingGemma: ``W = 31``). If every character of a
text lies in some token, a stretch of ``C`` characters yields at least ``C / W``
tokens, so the first ``C = (L + M) * W`` characters yield at least ``L + M`` tokens and
the ``L`` the model keeps are among them. A prompt is prepended to the cut text; it only
adds tokens. Normalizers that expand a character (NFKC, byte-level alphabets) make more
tokens, not fewer. Tokenizers that drop characters (a BERT pre-tokenizer's whitespace,
cleaned control characters) or fuse a run of unknown characters into one token break
the premise, so it is checked rather than assumed: the cut text must yield ``L + M``
content tokens or more (the truncated overflow counts them); if not, the cut is
widened 8x until it is the whole text. A result is never wrong for want of characters;
the worst case costs 8/7 of tokenising the whole text.

What a cut can change is the tokens next to it. Tokenizer models work per pre-token,
so only the last pre-token before the cut is affected; inside one pre-token (Gemma's
normalizer turns spaces into ``▁`` before its pre-tokenizer, so a whole text is one
BPE word) merges near the cut differ. Over 3,300 random prefixes of prose, code, runs
of spaces and newlines, repeated letters, emoji, CJK and rare characters,
EmbeddingGemma's tokenizer changed at most 3 tokens before the cut
(tests/test_safety_sizes.py checks ids against the uncut text); the margin ``M = 64``
keeps such changes away from the ``L`` kept tokens. That locality is measured, not
proven: a crafted chain of merges of strictly rising priority towards the end could in
principle reach further back than any fixed margin.
"""

from __future__ import annotations

from collections.abc import Sequence

from tarka_jax.errors import ConfigError

MARGIN = 64  # content tokens past the kept ones that a cut text must still yield
_WIDEN = 8
_VERY_LARGE = int(1e20)  # transformers' "no limit" sentinel for model_max_length is int(1e30)


def resolve_max_seq_length(tok_config: dict, st_config: dict, positions: int | None,
                           folder: str) -> int | None:
    """The truncation length a folder asks for: sentence-transformers' rule
    (sentence_bert_config.json's ``max_seq_length``, else tokenizer_config.json's
    ``model_max_length``), capped by the model's ``positions`` in both cases (ST caps only
    the second; a saved 10**12 must not size any table here)."""
    saved = st_config.get("max_seq_length")
    if saved is not None and (type(saved) is not int or saved < 1):
        raise ConfigError(f"sentence_bert_config.json in {folder}: max_seq_length must be a "
                          f"positive integer, got {saved!r:.60}")
    model_max = saved if saved is not None else tok_config.get("model_max_length")
    if model_max is not None and int(model_max) >= _VERY_LARGE:
        model_max = None
    candidates = [int(v) for v in (model_max, positions) if v is not None and int(v) != -1]
    return min(candidates) if candidates else None


def widest_token(tokenizer_json: dict | None, backend) -> int | None:
    """Characters of the longest vocabulary entry (tokenizer.json's model) or added token
    (the built ``backend``'s); None for a model kind without a vocabulary list, or without
    the parsed ``tokenizer_json`` (a file loaded straight into Rust): the tokenizer then asks
    :func:`vocabulary_width` the first time a text is long enough to need it."""
    if tokenizer_json is None:
        return None
    vocab = (tokenizer_json.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):  # BPE, WordPiece, WordLevel
        pieces = vocab.keys()
    elif isinstance(vocab, list):  # Unigram: [piece, score]
        pieces = (p[0] for p in vocab if isinstance(p, list) and p and isinstance(p[0], str))
    else:
        return None
    added = [t.content for t in backend.get_added_tokens_decoder().values()]
    return max(map(len, (*pieces, *added)), default=1) or 1


def vocabulary_width(backend) -> int:
    """:func:`widest_token` of a built ``tokenizers.Tokenizer`` (0.6 s for 262k tokens;
    asked once, and only when a text is long enough to be cut)."""
    return max(map(len, backend.get_vocab(with_added_tokens=True)), default=1) or 1


def encode_bounded(backend, texts: Sequence[str], prompt: str, max_tokens: int | None,
                   side: str, width: int) -> list:
    """``backend.encode_batch(prompt + text)`` for each text (the backend truncates to
    ``max_tokens``), a text longer than ``(max_tokens + MARGIN) * width`` cut first (module
    docstring; ``width``: :func:`widest_token`)."""
    encode = lambda items: backend.encode_batch(items, add_special_tokens=True)
    if max_tokens is None or side == "left":  # left: a cut moves BPE's alignment (docstring)
        return encode([prompt + t for t in texts])
    bound = (max_tokens + MARGIN) * width
    cuts = {i: bound for i, t in enumerate(texts) if len(t) > bound}
    out = encode([prompt + _cut(t, cuts.get(i)) for i, t in enumerate(texts)])
    while cuts:  # widen each cut whose text yielded too few tokens to be sure
        cuts = {i: c * _WIDEN for i, c in cuts.items() if _overflow(out[i]) < MARGIN}
        redo = list(cuts)
        for i, e in zip(redo, encode([prompt + _cut(texts[i], cuts[i]) for i in redo])):
            out[i] = e
        cuts = {i: c for i, c in cuts.items() if c < len(texts[i])}  # whole texts are done
    return out


def _cut(text: str, chars: int | None) -> str:
    return text if chars is None else text[:chars]


def _overflow(encoding) -> int:
    """Content tokens the backend's truncation cut off (special tokens not counted)."""
    return sum(len(o.ids) - sum(o.special_tokens_mask) for o in encoding.overflowing)


__all__ = ["MARGIN", "encode_bounded", "resolve_max_seq_length", "vocabulary_width",
           "widest_token"]

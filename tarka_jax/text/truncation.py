"""A text that will be truncated is cut at a character bound before it is tokenised.

Why: tokenising costs time and memory in the text's length, and truncation to
``max_seq_length`` happens after it: one 50 MB line cost 70 s and 7.9 GB to keep 256
tokens. :func:`encode_bounded` gives the backend at most a bounded prefix (right
truncation) or suffix (left truncation) of each text, with the same token ids.

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
BPE word) merges near the cut differ. Over 3,300 random cuts of prose, code, runs of
spaces and newlines, repeated letters, emoji, CJK and rare characters, EmbeddingGemma's
tokenizer changed at most 3 tokens before a cut (tests/test_safety_sizes.py checks ids
against the uncut text); the margin ``M = 64`` keeps such changes away from the ``L``
kept tokens. That locality is measured, not proven: BPE merges can in principle cascade
further than any fixed margin.
"""

from __future__ import annotations

from collections.abc import Sequence

MARGIN = 64  # content tokens past the kept ones that a cut text must still yield
_WIDEN = 8


def widest_token(tokenizer_json: dict, added: Sequence[str] = ()) -> int | None:
    """Characters of the longest vocabulary entry or added token (None: unknown model)."""
    vocab = (tokenizer_json.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):  # BPE, WordPiece, WordLevel
        pieces = vocab.keys()
    elif isinstance(vocab, list):  # Unigram: [piece, score]
        pieces = (p[0] for p in vocab if isinstance(p, list) and p and isinstance(p[0], str))
    else:
        return None
    extra = [t.get("content", "") for t in tokenizer_json.get("added_tokens") or ()
             if isinstance(t, dict)]
    return max(map(len, (*pieces, *extra, *added)), default=1) or 1


def vocabulary_width(backend) -> int:
    """:func:`widest_token` of a built ``tokenizers.Tokenizer`` (0.6 s for 262k tokens;
    ``TextTokenizer.from_folder`` reads it from tokenizer.json in 20 ms instead)."""
    return max(map(len, backend.get_vocab(with_added_tokens=True)), default=1) or 1


def encode_bounded(backend, texts: Sequence[str], prompt: str, max_tokens: int | None,
                   side: str, width: int) -> list:
    """``backend.encode_batch(prompt + text)`` for each text (the backend truncates to
    ``max_tokens``), a text longer than ``(max_tokens + MARGIN) * width`` cut first (module
    docstring; ``width``: :func:`widest_token`)."""
    encode = lambda items: backend.encode_batch(items, add_special_tokens=True)
    bound = None if max_tokens is None else (max_tokens + MARGIN) * width
    cuts = {i: bound for i, t in enumerate(texts) if bound is not None and len(t) > bound}
    out = encode([prompt + _cut(t, cuts.get(i), side) for i, t in enumerate(texts)])
    while cuts:  # widen each cut whose text yielded too few tokens to be sure
        cuts = {i: c * _WIDEN for i, c in cuts.items() if _overflow(out[i]) < MARGIN}
        redo = list(cuts)
        for i, e in zip(redo, encode([prompt + _cut(texts[i], cuts[i], side) for i in redo])):
            out[i] = e
        cuts = {i: c for i, c in cuts.items() if c < len(texts[i])}  # whole texts are done
    return out


def _cut(text: str, chars: int | None, side: str) -> str:
    if chars is None or len(text) <= chars:
        return text
    return text[:chars] if side != "left" else text[-chars:]


def _overflow(encoding) -> int:
    """Content tokens the backend's truncation cut off (special tokens not counted)."""
    return sum(len(o.ids) - sum(o.special_tokens_mask) for o in encoding.overflowing)


__all__ = ["MARGIN", "encode_bounded", "widest_token"]

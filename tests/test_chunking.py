"""Long texts as token windows (tarka_jax.text.chunking), checked on their own: no model.

The expected windows are built here from a fresh ``tokenizers.Tokenizer`` (text and
prompt tokenised apart, the stride arithmetic written out) and compared with
:func:`split_windows`: boundaries, overlap, the prompt and special tokens in every
window, ``max_chunks``, token and character spans, window 0 = truncation. A Gemma-like
byte-fallback BPE shows a prompt whose last space merges into the text's first token,
and characters split into byte tokens across windows.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, processors

from tarka_jax.errors import UsageError
from tarka_jax.testing.reference import GEMMA_PROMPTS, train_tokenizer
from tarka_jax.text import chunking
from tarka_jax.text.chunking import ChunkingSpec, split_windows, truncated_texts, window_bounds
from tarka_jax.text.tokenizer import TextTokenizer

# One word-piece token each in the test vocabulary (checked below), ASCII and not
# (the non-ASCII words are one <unk> each, with their own character offsets).
WORDS = ("the planet mars venus red query search result text title task code embedding "
         "héllo wörld 日本語 naïve").split()
BOS, EOS = 2, 1
QUERY = GEMMA_PROMPTS["query"]


def words(n: int, seed: int = 0) -> str:
    """A text of exactly ``n`` word-piece tokens."""
    return " ".join(WORDS[(seed * 7 + i * 5) % len(WORDS)] for i in range(n))


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("wp"))
    train_tokenizer(211, folder)
    return folder


def _tokenizer(folder: str, window: int) -> TextTokenizer:
    return TextTokenizer.from_folder(folder, max_seq_length=window, max_position_embeddings=512)


# ---- window_bounds --------------------------------------------------------------------------


@pytest.mark.parametrize("n,room,overlap,max_chunks", [
    (0, 5, 0, 4), (1, 5, 0, 4), (5, 5, 0, 4), (6, 5, 0, 4), (6, 5, 2, 4), (23, 5, 1, 100),
    (100, 7, 3, 100), (100, 7, 3, 5), (10, 1, 0, 100)])
def test_window_bounds_stride_overlap_and_cap(n, room, overlap, max_chunks):
    bounds, cut = window_bounds(n, room, overlap, max_chunks)
    stride = room - overlap
    wanted = 1 if n <= room else 1 + math.ceil((n - room) / stride)
    assert len(bounds) == min(wanted, max_chunks) and cut == (wanted > max_chunks)
    for k, (start, end) in enumerate(bounds):
        assert start == k * stride and end == min(start + room, n)
        if k:  # consecutive windows share exactly `overlap` tokens
            assert bounds[k - 1][1] - start == overlap
    covered = set().union(*(range(a, b) for a, b in bounds))
    assert covered == set(range(bounds[-1][1])) and (cut or bounds[-1][1] == n)


def test_window_bounds_and_spec_refuse_bad_settings():
    with pytest.raises(UsageError, match="chunk_overlap=5 must be smaller than the 5 text"):
        window_bounds(10, 5, 5, 4)
    with pytest.raises(UsageError, match="no room"):
        window_bounds(10, 0, 0, 4)
    with pytest.raises(UsageError, match="chunking must be one of 'truncate', 'mean'"):
        ChunkingSpec.parse("split")
    with pytest.raises(UsageError, match="chunk_overlap must be an int in >= 0, got -1"):
        ChunkingSpec.parse("mean", -1)
    with pytest.raises(UsageError, match="max_chunks must be an int in 1..1048576, got 0"):
        ChunkingSpec.parse("mean", 0, 0)
    with pytest.raises(UsageError, match="max_chunks"):
        ChunkingSpec.parse("mean", 0, 2.5)
    assert ChunkingSpec.parse(None) == ChunkingSpec("truncate", 0, chunking.DEFAULT_MAX_CHUNKS)
    assert ChunkingSpec.parse("chunks", 3, 9).as_dict() == {"mode": "chunks", "overlap": 3,
                                                            "max_chunks": 9}


# ---- split_windows on a word-piece tokenizer -------------------------------------------------


def _expected(fresh: Tokenizer, text: str, prompt: str, window: int, overlap: int,
              max_chunks: int) -> list[list[int]]:
    """The windows written out: <bos> prompt text[k*S : k*S+R] <eos>."""
    p = fresh.encode(prompt, add_special_tokens=False).ids if prompt else []
    t = fresh.encode(text, add_special_tokens=False).ids
    room = window - 2 - len(p)
    stride, out, start = room - overlap, [], 0
    while True:
        out.append([BOS] + p + t[start:start + room] + [EOS])
        if start + room >= len(t) or len(out) == max_chunks:
            return out
        start += stride


@pytest.mark.parametrize("prompt", ["", QUERY], ids=["no_prompt", "query_prompt"])
@pytest.mark.parametrize("overlap", [0, 3])
def test_windows_hold_prompt_and_specials_and_cover_the_text(wordpiece, prompt, overlap):
    window = 24
    tok = _tokenizer(wordpiece, window)
    fresh = Tokenizer.from_file(os.path.join(wordpiece, "tokenizer.json"))
    assert all(len(fresh.encode(w, add_special_tokens=False).ids) == 1 for w in WORDS)
    room = window - 2 - (len(fresh.encode(prompt, add_special_tokens=False).ids) if prompt else 0)
    # 1x, 1.5x, 3x and 10x the window, exactly the room and one token over, empty, short.
    lengths = [window, window * 3 // 2, 3 * window, 10 * window, room, room + 1, 0, 3]
    texts = [words(n, seed) for seed, n in enumerate(lengths)]
    win = split_windows(tok, texts, prompt=prompt, window=window, overlap=overlap)
    truncated = tok.encode(texts, prompt=prompt)
    for i, text in enumerate(texts):
        rows = np.flatnonzero(win.text_index == i)
        expected = _expected(fresh, text, prompt, window, overlap, 64)
        assert [win.ids[r] for r in rows] == expected, (i, lengths[i])
        assert win.chunk_index[rows].tolist() == list(range(len(expected)))
        assert win.ids[rows[0]] == truncated[i]  # window 0 is what truncation gives
        assert all(len(win.ids[r]) <= window for r in rows)
        offsets = fresh.encode(text, add_special_tokens=False).offsets
        for r in rows:
            start, end = win.token_spans[r]
            assert win.ids[r][len(win.ids[r]) - 1 - (end - start):-1] == \
                fresh.encode(text, add_special_tokens=False).ids[start:end]
            cs, ce = win.char_spans[r]
            if end > start:  # from the window's first token's first character to its last's last
                assert (cs, ce) == (offsets[start][0], offsets[end - 1][1])
                assert text[cs:ce].split() == text.split()[start:end]  # one word per token
            else:
                assert (cs, ce) == (0, 0) and lengths[i] == 0
    assert not win.cut.any()


def test_max_chunks_keeps_the_first_windows_and_says_cut(wordpiece):
    tok = _tokenizer(wordpiece, 12)
    texts = [words(100), words(10), words(30)]  # room 10: 10 windows, 1, 3
    win = split_windows(tok, texts, prompt=None, window=12, max_chunks=3)
    assert np.bincount(win.text_index).tolist() == [3, 1, 3]
    assert win.cut.tolist() == [True, False, False]
    assert win.token_spans[win.text_index == 0].tolist() == [[0, 10], [10, 20], [20, 30]]
    with pytest.raises(UsageError, match=r"the prompt \(7 tokens\) and 2 special tokens leave "
                                         r"no room for text in a window of 9 tokens"):
        split_windows(_tokenizer(wordpiece, 9), ["mars"], prompt=QUERY, window=9)


def test_hostile_text_is_cut_before_tokenising(wordpiece, monkeypatch):
    """A text far past max_chunks windows is tokenised only to the character bound."""
    tok = _tokenizer(wordpiece, 12)
    backend, longest, _ = chunking._whole_text_backend(tok)
    seen = []
    real = backend.encode_batch
    monkeypatch.setitem(chunking._BACKENDS, tok, (
        type("Spy", (), {"encode_batch": lambda self, xs, **kw: seen.extend(map(len, xs))
                         or real(xs, **kw)})(), longest, (1, 1)))
    huge = "mars " * 2_000_000  # 10M characters
    win = split_windows(tok, [huge, "venus"], prompt=None, window=12, max_chunks=2)
    bound = 2 * longest * (2 * 12 + 1)
    assert seen == [bound, 5] and win.cut.tolist() == [True, False]
    assert np.bincount(win.text_index).tolist() == [2, 1]


def test_truncated_texts_tells_exact_fit_from_cut(wordpiece):
    tok = _tokenizer(wordpiece, 12)
    texts = [words(9), words(10), words(11), "", words(400), words(3), words(4)]
    ids = tok.encode(texts)
    assert [len(x) for x in ids] == [11, 12, 12, 2, 12, 5, 6]
    assert truncated_texts(tok, texts, ids, prompt=None) == [2, 4]
    ids = tok.encode(texts, prompt=QUERY)  # 7 prompt tokens: words(3) fits exactly
    assert [len(x) for x in ids] == [12, 12, 12, 9, 12, 12, 12]
    assert truncated_texts(tok, texts, ids, prompt=QUERY) == [0, 1, 2, 4, 6]


# ---- a Gemma-like byte-fallback BPE: merged prompt space, characters split into bytes ---------


def _gemma_like() -> TextTokenizer:
    """Gemma's shape in miniature: spaces -> "▁" in the normaliser, BPE with byte fallback
    (a character outside the vocabulary becomes its UTF-8 bytes, one token each)."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    for c in "▁abcdefghijklmnopqrstuvwxyz:|.,'":
        vocab.setdefault(c, len(vocab))
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "c"), ("a", "t"), ("▁c", "at")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    backend = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", BOS), ("<eos>", EOS)])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse()])
    return TextTokenizer(backend, max_seq_length=10)


def _token_bytes(token: str) -> bytes:
    if token.startswith("<0x") and token.endswith(">"):
        return bytes.fromhex(token[3:-1])
    return token.replace("▁", " ").encode()


def test_prompt_space_merged_into_the_text_belongs_to_the_text():
    tok = _gemma_like()
    prompt, text = "q: ", "the cat the cat the cat the cat"
    full = tok.backend.encode(prompt + text)
    assert full.tokens[1:4] == ["q", ":", "▁the"]  # "▁the" starts inside the prompt
    win = split_windows(tok, [text], prompt=prompt, window=10, overlap=1)
    prompt_ids = full.ids[1:3]  # "q", ":" only: "▁the" is text, in window 0 only
    assert all(ids[:3] == [BOS] + prompt_ids and ids[-1] == EOS for ids in win.ids)
    assert win.ids[0] == tok.encode([text], prompt=prompt)[0]
    assert win.char_spans[0, 0] == 0  # the merged space is clamped to the text's start
    for (cs, ce), ids in zip(win.char_spans.tolist(), win.ids):
        assert text[cs:ce].strip() == tok.backend.decode(ids[3:-1]).strip()


def test_spans_round_multibyte_characters_outward_never_split_them():
    tok = _gemma_like()
    text = "the 中é😀 cat ü the 日本 cat 😀😀"
    whole = Tokenizer.from_str(tok.backend.to_str())
    whole.no_truncation()
    enc = whole.encode(text, add_special_tokens=False)
    pieces = [_token_bytes(t) for t in enc.tokens]
    data = text.encode()
    assert b"".join(pieces) == data  # the byte stream is the text's
    start_byte = np.cumsum([0] + [len(p) for p in pieces])
    char_of = np.repeat(np.arange(len(text)), [len(c.encode()) for c in text])  # byte -> char
    for overlap in (0, 1, 3):
        win = split_windows(tok, [text], prompt=None, window=10, overlap=overlap)
        split_somewhere = False
        for (a, b), (cs, ce) in zip(win.token_spans.tolist(), win.char_spans.tolist()):
            first, last = start_byte[a], start_byte[b] - 1  # the window's first and last byte
            assert (cs, ce) == (char_of[first], char_of[last] + 1)
            window_bytes = b"".join(pieces[a:b])
            span = text[cs:ce].encode()
            assert window_bytes in span  # the whole window lies inside its span...
            inner = len(text[:cs].encode())  # ...and the span adds only the split characters
            assert span.index(window_bytes) == first - inner
            assert len(span) - len(window_bytes) < 8
            split_somewhere |= len(span) != len(window_bytes)
            if len(span) == len(window_bytes):
                assert tok.backend.decode(win.ids[win.token_spans.tolist().index([a, b])][1:-1]) \
                    == text[cs:ce]
        assert split_somewhere or overlap  # the text is laid out so that some window splits

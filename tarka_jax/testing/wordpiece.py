"""Small word-piece tokenizers for random-weight models (tests, examples, tiny runs).

Runtime code (``tarka_jax.testing.tiny``) and the test helpers
(``tarka_jax.testing.reference``) both build their tokenizers here, so neither imports the other.
"""

from __future__ import annotations

import collections
import os

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from tarka_jax.files.jsonfiles import write_json
from tarka_jax.text.prompts import TASK_PROMPTS

_CORPUS_WORDS = (
    "the a of to and in is it that for on with as was by at from this be are or an which "
    "planet mars venus jupiter saturn red gas giant ring moon sun star orbit space light "
    "query document search result text title none task clustering classification code "
    "retrieval sentence similarity summarization jax flax torch model embedding vector "
    "attention window layer norm token batch padding kernel gradient loss teacher student"
).split()

SAMPLE_TEXTS = (
    "Which planet is known as the Red Planet?",
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
    "",
    "x",
)


def long_text(n_words: int, seed: int = 0) -> str:
    """A deterministic pseudo-sentence of ``n_words`` corpus words."""
    words = [_CORPUS_WORDS[(seed * 7919 + i * 104729) % len(_CORPUS_WORDS)] for i in range(n_words)]
    return " ".join(words)


def train_tokenizer(vocab_size: int, out_dir: str) -> Tokenizer:
    """A WordPiece tokenizer with Gemma's special-token ids: <pad>=0, <eos>=1, <bos>=2.

    The vocabulary is the same in every process (:func:`_word_piece_vocab`); the
    ``tokenizers`` trainers break ties between equally frequent pairs in hash order, which
    changes from run to run, and tests that compare vocabularies (init-student) then drift.
    """
    tok = Tokenizer(models.WordPiece(unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [long_text(40, s) for s in range(50)] + list(SAMPLE_TEXTS)
    corpus += list(TASK_PROMPTS.values()) + ["abcdefghijklmnopqrstuvwxyz0123456789'?,.|:!"]
    words = collections.Counter(
        word for text in corpus
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)))
    vocab = _word_piece_vocab(words, vocab_size, ["<pad>", "<eos>", "<bos>", "<unk>"])
    tok.model = models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100)
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>",
        special_tokens=[("<bos>", 2), ("<eos>", 1)],
    )
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    return tok


def _word_piece_vocab(words: collections.Counter, vocab_size: int,
                      specials: list[str]) -> dict[str, int]:
    """Byte-pair merges over ``words`` (word -> count), ties broken by the pair's text.

    Pieces after a word's first carry WordPiece's ``##`` prefix. The vocabulary is the
    specials, every character of the corpus alphabet alone and as a ``##`` piece (so any word
    spelled in it tokenises, e.g. "17" though no corpus word starts with a digit), then
    the merged pieces in merge order until ``vocab_size``.
    """
    spelled = {w: [w[0]] + ["##" + c for c in w[1:]] for w in words}
    alphabet = sorted(set("".join(words)))
    pieces = list(specials) + alphabet + ["##" + c for c in alphabet]
    if len(pieces) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is below the {len(pieces)} specials and "
                         "character pieces of the tokenizer corpus")
    known = set(pieces)
    while len(pieces) < vocab_size:
        pairs: collections.Counter = collections.Counter()
        for w, s in spelled.items():
            for pair in zip(s, s[1:]):
                pairs[pair] += words[w]
        if not pairs:
            break
        a, b = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merged = a + b[2:]
        for w, s in spelled.items():
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            spelled[w] = out
        if merged not in known:
            known.add(merged)
            pieces.append(merged)
    return {p: i for i, p in enumerate(pieces)}


def write_tokenizer_config(out_dir: str, max_length: int,
                           add_flags: tuple[bool, bool] | None = None) -> None:
    """The tokenizer_config.json of :func:`train_tokenizer`'s tokenizers (Gemma's token names)."""
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "padding_side": "right",
        "model_max_length": max_length,
    }
    if add_flags is not None:
        config["add_bos_token"], config["add_eos_token"] = add_flags
    write_json(os.path.join(out_dir, "tokenizer_config.json"), config)

"""Small word-piece tokenizers for random-weight models (tests, examples, tiny runs).

Runtime code (``tarka_jax.distill.tiny``) and the test helpers
(``tarka_jax.testing``) both build their tokenizers here, so neither imports the other.
"""

from __future__ import annotations

import os

from tokenizers import (Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                        trainers)

from tarka_jax.prompts import TASK_PROMPTS
from tarka_jax.textfiles import write_json

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
    """A WordPiece tokenizer with Gemma's special-token ids: <pad>=0, <eos>=1, <bos>=2."""
    tok = Tokenizer(models.WordPiece(unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
        min_frequency=1, show_progress=False,
    )
    corpus = [long_text(40, s) for s in range(50)] + list(SAMPLE_TEXTS)
    corpus += list(TASK_PROMPTS.values()) + ["abcdefghijklmnopqrstuvwxyz0123456789'?,.|:!"]
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>",
        special_tokens=[("<bos>", 2), ("<eos>", 1)],
    )
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    return tok


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

"""A byte-level BPE vocabulary trained on your text: the student's tokenizer (``tarka-jax train-tokenizer``).

Tarka-Embedding swaps EmbeddingGemma's 262k SentencePiece vocabulary for LFM2's 64k byte-level
BPE, then transplants the embedding rows (:mod:`.init_student`). LFM2's tokenizer is not
always at hand (not offline, not for another domain), so this step trains one of the same kind
on a corpus with the ``tokenizers`` library's ``BpeTrainer`` (the Rust trainer Hugging Face
tokenizers are made with: no hand-written merges, and a 32k vocabulary from ~20 MB of text in
under a minute on two cores).

The tokenizer: NFC normalisation, GPT-2's byte-level pre-tokenizer (every byte is in the
alphabet, so nothing is ever unknown), BPE merges, and EmbeddingGemma's framing ``<bos> text
<eos>`` with Gemma's ids for the specials (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3,
``<mask>`` 4), so the student keeps the teacher's pad id and special-token layout and
sentence-transformers loads the folder (``PreTrainedTokenizerFast``) with the same ids.
Training is deterministic for a given corpus and settings (tokenizers 0.23; tested).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Iterable

from tarka_jax.errors import TarkaError
from tarka_jax.files.jsonfiles import write_json

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # ids 0..4, Gemma's order
DEFAULT_VOCAB_SIZE = 32_000
MAX_VOCAB_SIZE = 1 << 20  # the trainer holds every candidate pair in memory


@dataclasses.dataclass(frozen=True)
class BpeReport:
    """What :func:`train_bpe` trained on and wrote."""

    vocab_size: int
    texts: int
    characters: int
    seconds: float
    sha256: str  # of tokenizer.json

    def summary(self) -> str:
        return (f"{self.vocab_size}-token byte-level BPE from {self.texts} texts "
                f"({self.characters / 1e6:.1f}M characters) in {self.seconds:.1f} s; "
                f"tokenizer.json sha256 {self.sha256[:16]}")


def untrained_tokenizer():
    """The pipeline around the merges: normaliser, byte-level pieces, framing, decoder."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    bos, eos = SPECIAL_TOKENS.index("<bos>"), SPECIAL_TOKENS.index("<eos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>",
        special_tokens=[("<bos>", bos), ("<eos>", eos)])
    return tok


def train_bpe(texts: Iterable[str], out_dir: str, *, vocab_size: int = DEFAULT_VOCAB_SIZE,
              min_frequency: int = 2, max_length: int = 2048, sources=(),
              force: bool = False) -> BpeReport:
    """Train on ``texts`` and write ``tokenizer.json`` + ``tokenizer_config.json`` to ``out_dir``.

    ``sources`` are the input files (never replaced by the output); ``force`` replaces an
    earlier output of ours. ``max_length`` is the ``model_max_length`` written.
    """
    from tokenizers import pre_tokenizers, trainers

    from tarka_jax.files.outputs import check_output, output_folder

    floor = len(SPECIAL_TOKENS) + 256  # the specials and every byte
    if not isinstance(vocab_size, int) or not floor <= vocab_size <= MAX_VOCAB_SIZE:
        raise TarkaError(f"vocab_size must be an int in {floor}..{MAX_VOCAB_SIZE}; got "
                         f"{vocab_size!r}")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise TarkaError(f"min_frequency must be a positive int; got {min_frequency!r}")
    if type(max_length) is not int or max_length < 1:  # a negative one loaded as a length
        raise TarkaError(f"max_length must be a positive int; got {max_length!r}")
    check_output(out_dir, sources=sources, force=force)  # before the (minutes of) training
    counted = _Counted(texts)
    tok = untrained_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    start = time.perf_counter()
    tok.train_from_iterator(counted, trainer=trainer)
    seconds = time.perf_counter() - start
    if counted.texts == 0:
        raise TarkaError("no non-empty text to train a tokenizer on")
    text = tok.to_str(pretty=True)
    with output_folder(out_dir, sources=sources, force=force, kind="tokenizer") as tmp:
        with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(text)
        write_json(os.path.join(tmp, "tokenizer_config.json"), {
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>",
            "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
            "mask_token": "<mask>", "padding_side": "right", "model_max_length": max_length,
            "add_bos_token": True, "add_eos_token": True})
    return BpeReport(tok.get_vocab_size(), counted.texts, counted.characters, seconds,
                     hashlib.sha256(text.encode()).hexdigest())


class _Counted:
    """The non-empty texts of an iterable, counted as the trainer pulls them."""

    def __init__(self, texts: Iterable[str]):
        self._texts, self.texts, self.characters = texts, 0, 0

    def __iter__(self):
        for text in self._texts:
            if isinstance(text, str) and text.strip():
                self.texts += 1
                self.characters += len(text)
                yield text

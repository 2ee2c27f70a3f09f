"""``tarka-jax train-tokenizer``: a byte-level BPE vocabulary for a student, on a tiny corpus."""

from __future__ import annotations

import gzip
import json
import os
import unicodedata

import pytest

from tarka_jax.errors import TarkaError
from tarka_jax.recipe.bpe_tokenizer import SPECIAL_TOKENS, train_bpe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ODD = ["naïve café", "emoji 🚀 and CJK 漢字", "tabs\tand  spaces", "x", "Ǆ ﬁ (NFC keeps)"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """1,500 real sentences (stdlib docstrings, committed) as a .txt file."""
    with gzip.open(os.path.join(ROOT, "examples", "data", "stdlib", "sentences.txt.gz"), "rt",
                   encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(1500)]
    path = tmp_path_factory.mktemp("bpe") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> str:
    from tarka_jax.cli import main

    out = str(tmp_path_factory.mktemp("tok") / "bpe")
    assert main(["train-tokenizer", "--input", corpus, "--out", out, "--vocab-size", "700"]) == 0
    return out


def test_vocabulary_specials_and_framing(trained):
    from tarka_jax import TextTokenizer

    tok = TextTokenizer.from_folder(trained, max_seq_length=64)
    backend = tok.backend
    assert backend.get_vocab_size() == 700
    assert [backend.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.pad_token_id == 0
    ids = tok.encode(["Return the root logger."])[0]
    assert ids[0] == 2 and ids[-1] == 1 and 3 not in ids  # <bos> ... <eos>, nothing unknown
    assert len(ids) < len("Return the root logger.")  # merges learned from the corpus


def test_every_text_round_trips_byte_for_byte(trained):
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(os.path.join(trained, "tokenizer.json"))
    for text in ODD:
        ids = backend.encode(text, add_special_tokens=False).ids
        assert backend.decode(ids) == unicodedata.normalize("NFC", text), text
        assert 3 not in ids


def test_training_is_deterministic(corpus, trained, tmp_path):
    with open(corpus, encoding="utf-8") as f:
        texts = f.read().splitlines()
    again = train_bpe(texts, str(tmp_path / "again"), vocab_size=700)
    with open(os.path.join(trained, "tokenizer.json"), "rb") as a, \
            open(os.path.join(tmp_path, "again", "tokenizer.json"), "rb") as b:
        assert a.read() == b.read()
    assert again.texts == len([t for t in texts if t.strip()])


def test_init_student_transplants_into_the_trained_vocabulary(jax_only_model, trained, tmp_path):
    """Ordinary tokens map through the teacher's tokenizer; the five specials by role/string."""
    from tarka_jax.recipe.init_student import init_student

    report = init_student(jax_only_model, trained, str(tmp_path / "student"))
    assert report.vocab_size == 700 and report.special >= 4
    assert report.mapped + report.special + report.random == 700
    assert report.mapped > 400  # byte pieces of multi-byte characters have no text alone


def test_refusals(corpus, trained, tmp_path, capsys):
    from tarka_jax.cli import main

    with pytest.raises(TarkaError, match="vocab_size must be an int in 261"):
        train_bpe(["a b c"], str(tmp_path / "small"), vocab_size=100)
    for bad in (0, -5):  # --max-length -5 used to be written as model_max_length -5
        with pytest.raises(TarkaError, match="max_length must be a positive int"):
            train_bpe(["a b c"], str(tmp_path / "neg"), vocab_size=300, max_length=bad)
    assert not os.path.exists(tmp_path / "neg")
    with pytest.raises(TarkaError, match="no non-empty text"):
        train_bpe(["", "  "], str(tmp_path / "empty"), vocab_size=300)
    assert not os.path.exists(tmp_path / "empty")
    # an existing output is never replaced without --force, and --force only replaces ours
    assert main(["train-tokenizer", "--input", corpus, "--out", trained]) == 2
    assert "already exists" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["train-tokenizer", "--input", corpus, "--out", str(mine), "--force"]) == 2
    assert (mine / "notes.txt").read_text() == "keep"


@pytest.mark.torch
def test_transformers_reads_the_same_ids(trained):
    from transformers import AutoTokenizer

    from tarka_jax import TextTokenizer

    theirs = AutoTokenizer.from_pretrained(trained)
    ours = TextTokenizer.from_folder(trained, max_seq_length=128)
    texts = ["Return the root logger.", *ODD]
    assert ours.encode(texts) == [theirs(t)["input_ids"] for t in texts]
    assert json.load(open(os.path.join(trained, "tokenizer_config.json")))["pad_token"] == "<pad>"

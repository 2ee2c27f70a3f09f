"""Text at the edges: BOM, CRLF / CR, invalid UTF-8 (file:line), directories, lone surrogates.

Unit tests of :mod:`tarka_jax.files.text_input` plus the CLI paths that use it (stdin for
``embed``, ``--docs`` files and folders for ``search``). Torch-free.
"""

from __future__ import annotations

import io
import json
import re
import sys

import numpy as np
import pytest

from tarka_jax import Embedder
from tarka_jax.cli import main
from tarka_jax.files import text_input
from tarka_jax.files.text_input import TextInputError
from tarka_jax.inference.cli import read_documents

TEXT = "Mars is known as the Red Planet"


@pytest.fixture(scope="module")
def model(jax_only_model):
    return Embedder.from_pretrained(jax_only_model)


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_decode_strips_bom_and_normalises_line_ends():
    assert text_input.decode(b"\xef\xbb\xbfa\r\nb\rc\n", "x") == "a\nb\nc\n"
    assert text_input.split_lines("a\n\nb\n") == ["a", "", "b"]
    assert text_input.lines("a\n \nb") == [(1, "a"), (3, "b")]


def test_invalid_utf8_names_file_and_line_or_is_replaced(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(TextInputError, match=re.escape(f"{path}:3: not valid UTF-8 (byte 0xff)")):
        text_input.read_file(path)
    assert text_input.read_file(path, errors="replace").splitlines()[2] == "bad \ufffd byte"
    with pytest.raises(ValueError, match="errors must be one of"):
        text_input.read_file(path, errors="ignore")  # silently dropping bytes is not offered


def test_embed_stdin_with_bom_equals_the_plain_text(jax_only_model, model, tmp_path,
                                                    monkeypatch):
    out = tmp_path / "e.npy"
    _stdin(monkeypatch, b"\xef\xbb\xbf" + TEXT.encode() + b"\r\nsecond\r\n")
    assert main(["embed", "-m", jax_only_model, "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), model.encode([TEXT, "second"]))


def test_embed_stdin_invalid_utf8_is_a_clear_error(jax_only_model, monkeypatch, capsys):
    _stdin(monkeypatch, b"ok\n\xc3\x28 broken\n")
    assert main(["embed", "-m", jax_only_model]) == 2
    assert "<stdin>:2: not valid UTF-8" in capsys.readouterr().err
    _stdin(monkeypatch, b"ok\n\xc3\x28 broken\n")
    assert main(["embed", "-m", jax_only_model, "--errors", "replace"]) == 0
    texts = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert texts == ["ok", "\ufffd( broken"]


def test_embed_uppercase_npy_suffix_writes_npy(jax_only_model, model, tmp_path):
    out = tmp_path / "OUT.NPY"
    assert main(["embed", "-m", jax_only_model, "-o", str(out), TEXT]) == 0
    np.testing.assert_array_equal(np.load(out), model.encode([TEXT]))


def test_search_docs_with_bom_scores_as_the_plain_file(jax_only_model, tmp_path, capsys):
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_bytes(TEXT.encode() + b"\nVenus is hot\n")
    bom.write_bytes(b"\xef\xbb\xbf" + TEXT.encode() + b"\r\nVenus is hot\r\n")
    printed = []
    for docs in (plain, bom):
        assert main(["search", "-m", jax_only_model, "--docs", str(docs), "-q", TEXT]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1]  # same scores, same snippets: no BOM left in the text


def test_search_docs_invalid_utf8_names_file_and_line(jax_only_model, tmp_path, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_bytes(b"one\ntwo \xe9\n")
    assert main(["search", "-m", jax_only_model, "--docs", str(docs), "-q", "x"]) == 2
    assert f"{docs}:2: not valid UTF-8" in capsys.readouterr().err


def test_jsonl_with_bom_and_bad_bytes(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_bytes(b'\xef\xbb\xbf{"text": "x"}\r\n{"text": "y"}\r\n')
    assert read_documents(str(good))[0] == ["x", "y"]
    bad = tmp_path / "b.jsonl"
    bad.write_bytes(b'{"text": "x"}\n{"text": "\xff"}\n')
    with pytest.raises(ValueError, match=re.escape(f"{bad}:2: not valid UTF-8")):
        read_documents(str(bad))


def test_docs_directory_says_what_it_read_and_can_recurse(tmp_path, capsys):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "b.MD").write_bytes(b"\xef\xbb\xbfbeta")
    (folder / "image.png").write_bytes(b"\x89PNG")
    (folder / "sub" / "c.txt").write_text("gamma")
    texts, labels = read_documents(str(folder))
    assert (texts, labels) == (["alpha", "beta"], ["a.txt", "b.MD"])
    err = capsys.readouterr().err
    assert "read 2 file(s)" in err and "image.png" in err and "sub/" in err
    assert "--recursive" in err
    texts, labels = read_documents(str(folder), recursive=True)
    assert labels == ["a.txt", "b.MD", "sub/c.txt"] and texts[-1] == "gamma"


def test_lone_surrogates_are_refused_by_the_python_api(model):
    with pytest.raises(ValueError, match=r"texts\[1\] holds a lone surrogate '\\ud800'"):
        model.encode(["fine", "bad \ud800 text"])
    with pytest.raises(ValueError, match="lone surrogate"):
        model.encode_query("\udcff")


def test_embed_without_text_on_a_terminal_prints_a_hint(jax_only_model, monkeypatch, capsys):
    class Terminal(io.TextIOWrapper):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(io.BytesIO(b"hello\n"), encoding="utf-8"))
    assert main(["embed", "-m", jax_only_model]) == 0
    assert "reading texts from stdin" in capsys.readouterr().err

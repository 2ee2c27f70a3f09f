"""embed-corpus --chunking, an index that shows its texts, search --docs --chunking, and the
truncation line of the CLI (issue 30). Tiny torch-free model, windows of 24 tokens."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tarka_jax import Embedder
from tarka_jax.cli import main
from tarka_jax.testing.reference import cli_killed_when_replacing, long_text
from tarka_jax.text.chunking import ChunkingSpec

WINDOW = 24
TEXTS = ["mars is red", long_text(60, 1), "the red planet", long_text(130, 2), "",
         "naïve café ☕ " + long_text(40, 3), "venus", long_text(25, 4)]


@pytest.fixture(scope="module")
def model(jax_only_model):
    return Embedder.from_pretrained(jax_only_model, max_seq_length=WINDOW)


def inputs(tmp_path) -> list[str]:
    """The texts as a .txt with a BOM and CRLF line ends, then a .jsonl: two inputs."""
    txt, jsonl = tmp_path / "a.txt", tmp_path / "b.jsonl"
    txt.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(TEXTS[:5]).encode() + b"\r\n")
    jsonl.write_text("".join(json.dumps({"text": t, "id": f"doc-{i}"}) + "\n"
                             for i, t in enumerate(TEXTS[5:], 5)), encoding="utf-8")
    return [str(txt), str(jsonl)]


def run(model, paths, out, mode="chunks", overlap=2, **kw):
    from tarka_jax.corpus.job import embed_corpus

    kw.setdefault("shard_size", 3)
    return embed_corpus(model, paths, str(out), model_name="m", kind="document",
                        progress=False, chunking=ChunkingSpec.parse(mode, overlap), **kw)


def files(folder) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest()
            for n in sorted(os.listdir(folder)) if n.startswith(("shard-", "rows-", "ids-"))}


def test_chunk_rows_equal_encode_chunks_and_mean_rows_equal_encode_mean(model, tmp_path):
    from tarka_jax.corpus.search import IndexHits
    from tarka_jax.corpus.store import ROW_COLUMNS, read_embeddings, read_manifest, read_rows

    paths = inputs(tmp_path)
    manifest = run(model, paths, tmp_path / "chunks", shard_size=8)  # passes as encode's
    want = model.encode_document(TEXTS, chunking="chunks", chunk_overlap=2)
    emb, rows = read_embeddings(tmp_path / "chunks"), read_rows(tmp_path / "chunks")
    assert manifest["rows"] == len(want) > len(TEXTS) and emb.shape == want.embeddings.shape
    np.testing.assert_allclose(emb, want.embeddings, rtol=0, atol=1e-6)
    col = {c: rows[:, i] for i, c in enumerate(ROW_COLUMNS)}
    np.testing.assert_array_equal(col["text_index"], want.text_index)
    np.testing.assert_array_equal(col["chunk_index"], want.chunk_index)
    np.testing.assert_array_equal(rows[:, 6:8], want.token_spans)
    np.testing.assert_array_equal(rows[:, 8:10], want.char_spans)
    assert read_manifest(str(tmp_path / "chunks"))["chunking"] == {
        "mode": "chunks", "overlap": 2, "max_chunks": 64}
    # every row reads its window's text back from the inputs (BOM, CRLF, non-ASCII)
    hits = IndexHits(str(tmp_path / "chunks"), read_embeddings(tmp_path / "chunks", mmap=True))
    for r, (i, (a, b), k) in enumerate(zip(want.text_index, want.char_spans, want.chunk_index)):
        text, label = hits.describe(r)
        assert text == TEXTS[i][a:b]
        assert label == (f"a.txt line {i + 1}, chunk {k}" if i < 5
                         else f"b.jsonl line {i - 4}, chunk {k}")

    run(model, paths, tmp_path / "mean", mode="mean", shard_size=8)
    mean = read_embeddings(tmp_path / "mean")
    np.testing.assert_allclose(mean, model.encode_document(TEXTS, chunking="mean",
                                                           chunk_overlap=2), rtol=0, atol=1e-6)
    assert (read_rows(tmp_path / "mean")[:, 5:] == -1).all()


def test_resume_refuses_another_chunking_in_one_line(model, tmp_path):
    from tarka_jax.corpus.store import CorpusOutputError

    paths, out = inputs(tmp_path), tmp_path / "out"
    run(model, paths, out)
    for mode, overlap, what in (("mean", 2, "'mean'"), ("chunks", 3, "'overlap': 3"),
                                ("truncate", 0, "'truncate'")):
        with pytest.raises(CorpusOutputError, match="settings differ.*chunking.*" + what) as e:
            run(model, paths, out, mode=mode, overlap=overlap, resume=True)
        assert "\n" not in str(e.value)
    run(model, paths, out, resume=True)  # the same settings resume


class Killed(BaseException):
    """Stands for SIGKILL: nothing of the job's own cleanup catches it."""


def test_a_kill_then_resume_gives_bit_identical_chunk_rows(model, tmp_path, monkeypatch):
    from tarka_jax.corpus.store import read_manifest

    paths = inputs(tmp_path)
    run(model, paths, tmp_path / "whole")
    real = os.replace

    def replace(src, dst, *a, **k):  # killed as shard 1's embeddings are renamed into place
        if os.fspath(dst).endswith("shard-000001.npy"):
            raise Killed
        return real(src, dst, *a, **k)

    out = tmp_path / "killed"
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        run(model, paths, out)
    monkeypatch.setattr(os, "replace", real)
    assert not read_manifest(str(out))["complete"] and "shard-000001.npy" not in os.listdir(out)
    assert "rows-000001.npy" in os.listdir(out)  # written, its shard not: redone
    run(model, paths, out, resume=True)
    assert files(out) == files(tmp_path / "whole") and len(files(out)) == 3 * 2


@pytest.mark.slow  # three real embed-corpus processes: leg 1 only
def test_a_real_sigkill_then_a_real_resume_gives_bit_identical_chunk_rows(jax_only_model,
                                                                          tmp_path):
    """The same as above with real processes: one SIGKILLs itself as shard 1's embeddings are
    renamed into place (its rows table already written), a second resumes it; the shards, rows
    tables and ids equal an uninterrupted process's, byte for byte."""
    paths = inputs(tmp_path)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TARKA_JAX_COMPILATION_CACHE="0")

    def embed_corpus(out, *extra, code=("-m", "tarka_jax")):
        argv = [sys.executable, *code, "embed-corpus", "-m", jax_only_model, "-i", *paths,
                "-o", str(out), "--document", "--max-seq-length", str(WINDOW), "--shard-size",
                "3", "--chunking", "chunks", "--chunk-overlap", "2", "--no-progress", *extra]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)

    whole = embed_corpus(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = embed_corpus(tmp_path / "killed", code=("-c", cli_killed_when_replacing("shard-000001.npy")))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    names = os.listdir(tmp_path / "killed")
    assert "rows-000001.npy" in names and "shard-000001.npy" not in names
    resumed = embed_corpus(tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert files(tmp_path / "killed") == files(tmp_path / "whole")
    assert len(files(tmp_path / "whole")) == 3 * 2  # the shard and rows table of 3 shards


def hit_lines(text: str) -> list[str]:
    """Printed hits without their scores (the two searches round differently)."""
    return [line.split("  ", 2)[-1] if line.startswith("  ") else line
            for line in text.splitlines()]


@pytest.mark.parametrize("mode", ["truncate", "chunks"])
def test_search_index_prints_what_search_docs_prints(jax_only_model, tmp_path, capsys, mode):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(t for t in TEXTS if t) + "\n", encoding="utf-8")
    common = ["--model", jax_only_model, "--max-seq-length", str(WINDOW)]
    out = str(tmp_path / "index")
    assert main(["embed-corpus", *common, "-i", str(docs), "-o", out, "--document",
                 "--shard-size", "3", "--no-progress", "--chunking", mode]) == 0
    capsys.readouterr()
    queries = ["--query", "red planet", "--query", TEXTS[3][40:90], "--top-k", "4"]
    assert main(["search", *common, "--index", out, *queries]) == 0
    index = capsys.readouterr().out
    assert main(["search", *common, "--docs", str(docs), "--chunking", mode, *queries]) == 0
    listed = capsys.readouterr().out
    assert hit_lines(index) == hit_lines(listed)
    assert "[line " in index and index.count("\n") == 2 * 5
    if mode == "chunks":
        assert ", chunk 1]" in index  # a later window of a long text is found and shown
    assert main(["search", *common, "--index", out, "--chunking", "mean", *queries]) == 2
    assert "--chunking is for --docs" in capsys.readouterr().err


def test_an_untrusted_index_is_checked_and_a_changed_input_is_named(model, tmp_path):
    from tarka_jax.corpus.search import IndexHits
    from tarka_jax.corpus.store import CorpusOutputError, read_embeddings, read_rows

    paths, out = inputs(tmp_path), tmp_path / "out"
    run(model, paths, out)
    rows = np.load(out / "rows-000000.npy")
    rows[0, 3] = 1 << 40  # a length past the input's recorded size
    np.save(out / "rows-000000.npy", rows)
    hits = IndexHits(str(out), read_embeddings(out, mmap=True))
    with pytest.raises(CorpusOutputError, match=r"rows-000000.npy row 0 points at bytes .* "
                                                "outside input .*a.txt"):
        hits.describe(0)
    with open(paths[1], "r+b") as f:  # same size, other bytes: the checksum tells
        f.seek(20)
        f.write(b"X")
    first_of_5 = int(np.flatnonzero(read_rows(out)[:, 0] == 5)[0])  # b.jsonl's first line
    text, _ = hits.describe(first_of_5)
    assert text.startswith("(text unavailable: ") and "b.jsonl changed" in text


def test_the_cli_says_how_many_inputs_were_truncated(jax_only_model, tmp_path, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(t for t in TEXTS if t) + "\n", encoding="utf-8")
    common = ["--model", jax_only_model, "--max-seq-length", str(WINDOW)]
    from tarka_jax.inference.chunked import EncodeReport

    said = EncodeReport()
    Embedder.from_pretrained(jax_only_model, max_seq_length=WINDOW).encode_document(
        [t for t in TEXTS if t], report=said)
    n_long = len(said.truncated)
    assert n_long >= 3
    out = str(tmp_path / "index")
    assert main(["embed-corpus", *common, "-i", str(docs), "-o", out, "--document",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"tarka-jax embed-corpus: {n_long} of 7 records were longer than "
                       f"max_seq_length ({WINDOW} tokens) and were truncated (chunking 'mean' "
                       "or 'chunks' embeds them whole)")
    assert main(["search", *common, "--docs", str(docs), "--query", "mars"]) == 0
    err = capsys.readouterr().err
    assert f"tarka-jax search: documents: {n_long} of 7 texts were longer" in err
    assert "queries" not in err
    assert main(["search", *common, "--docs", str(docs), "--query", "mars", "--chunking",
                 "mean"]) == 0
    assert "truncated" not in capsys.readouterr().err
    assert main(["embed", *common, TEXTS[1], "mars"]) == 0
    assert "tarka-jax embed: 1 of 2 texts were longer" in capsys.readouterr().err

"""embed-corpus in one process: reader rules, equality with Embedder.encode*, resume, search.

Models are the torch-free ``jax_only_model`` (conftest) and a copy with one weight changed,
for "another model" refusals.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

TEXTS = [f"record {i}: " + " ".join(["alpha", "beta", "gamma", "delta"][: 1 + i % 4] * (1 + i % 5))
         for i in range(37)] + ["", "  spaced  ", "ünïcödé ∑ text"]


@pytest.fixture(scope="module")
def model(jax_only_model):
    from tarka_jax import Embedder

    return Embedder.from_pretrained(jax_only_model)


@pytest.fixture(scope="module")
def other_model(jax_only_model, tmp_path_factory):
    """The same folder with one weight changed: another model to a resume."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from tarka_jax import Embedder

    folder = str(tmp_path_factory.mktemp("other") / "m")
    shutil.copytree(jax_only_model, folder)
    weights = load_file(os.path.join(folder, "model.safetensors"))
    name = min(weights)
    weights[name] = weights[name] + np.float32(1e-3)
    save_file(weights, os.path.join(folder, "model.safetensors"))
    return Embedder.from_pretrained(folder)


def _write(tmp_path, fmt: str, texts, name="corpus") -> str:
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "txt":
        path.write_bytes(("\n".join(texts) + "\n").encode())
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "id": f"doc-{i}"}) + "\n"
                                for i, t in enumerate(texts)))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": texts, "id": [f"doc-{i}" for i in range(len(texts))]}),
                       path, row_group_size=7)
    return str(path)


def _run(model, inputs, out, **kw):
    from tarka_jax.corpus.job import embed_corpus

    kw.setdefault("shard_size", 8)
    kw.setdefault("progress", False)
    return embed_corpus(model, inputs, str(out), model_name="m", **kw)


# ---- reader ----------------------------------------------------------------------------------


def test_reader_txt_splits_on_newline_only_and_keeps_empty_lines(tmp_path):
    from tarka_jax.corpus.reader import describe_inputs, expand_inputs, iter_records

    a = tmp_path / "b.txt"  # sorted after a glob's "a.txt"
    a.write_bytes(b"\xef\xbb\xbffirst\r\n\r\nline\xe2\x80\xa8same record\n\nlast no newline")
    b = tmp_path / "a.txt"
    b.write_bytes(b"zero\n")
    paths = expand_inputs([str(tmp_path / "*.txt")])
    assert [os.path.basename(p) for p in paths] == ["a.txt", "b.txt"]
    records = list(iter_records(paths))
    assert records == [(0, "zero", None), (1, "first", None), (2, "", None),
                       (3, "line\u2028same record", None), (4, "", None),
                       (5, "last no newline", None)]
    assert [f.records for f in describe_inputs(paths)] == [1, 5]


def test_reader_errors_name_the_file_and_line(tmp_path):
    from tarka_jax.corpus.reader import CorpusError, describe_inputs, expand_inputs, iter_records

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n\n{"text": "b"}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2 is a blank line"):
        describe_inputs([str(bad)])
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(CorpusError, match=r'nofield\.jsonl:2 needs a string "text" field'):
        list(iter_records([str(nofield)]))
    with pytest.raises(CorpusError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.parquet")])
    with pytest.raises(CorpusError, match="must end in one of"):
        (tmp_path / "x.csv").write_text("a\n")
        expand_inputs([str(tmp_path / "x.csv")])
    pq_path = _write(tmp_path, "parquet", ["a", "b"])
    with pytest.raises(CorpusError, match="no column 'body'"):
        describe_inputs([pq_path], text_field="body")


# ---- embed-corpus == Embedder.encode* --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "parquet"])
def test_embed_corpus_equals_encode_document(model, tmp_path, fmt):
    from tarka_jax.corpus.store import read_embeddings, read_ids, read_manifest

    half = len(TEXTS) // 2
    inputs = [_write(tmp_path, fmt, TEXTS[:half], "one"), _write(tmp_path, fmt, TEXTS[half:],
                                                                  "two")]
    id_field = None if fmt == "txt" else "id"
    _run(model, inputs, tmp_path / "out", kind="document", id_field=id_field)
    want = model.encode_document(TEXTS)
    got = read_embeddings(tmp_path / "out")
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    lazy = read_embeddings(tmp_path / "out", mmap=True)
    np.testing.assert_array_equal(lazy[5:23, :7], got[5:23, :7])
    np.testing.assert_array_equal(lazy[[39, 0, 8]], got[[39, 0, 8]])
    np.testing.assert_array_equal(lazy[-1], got[-1])
    np.testing.assert_array_equal(np.asarray(lazy), got)
    ids = read_ids(tmp_path / "out")
    assert ids == (list(range(len(TEXTS))) if fmt == "txt"
                   else [f"doc-{i}" for i in range(half)]
                   + [f"doc-{i}" for i in range(len(TEXTS) - half)])
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest["complete"] and manifest["shards_done"] == manifest["shards"] == 5
    assert manifest["prompt"] == model.prompts["document"]
    assert [i["records"] for i in manifest["inputs"]] == [half, len(TEXTS) - half]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [".tarka-jax-output.json", "manifest.json"] + [f"shard-{k:06d}.npy" for k in range(5)]
        + [f"rows-{k:06d}.npy" for k in range(5)]
        + ([f"ids-{k:06d}.json" for k in range(5)] if id_field else []))


def test_embed_corpus_query_truncated_normalized(model, tmp_path):
    from tarka_jax.corpus.store import read_embeddings

    path = _write(tmp_path, "txt", TEXTS)
    _run(model, [path], tmp_path / "out", kind="query", truncate_dim=16, normalize=True,
         shard_size=100)
    want = model.encode_query(TEXTS, truncate_dim=16, normalize_embeddings=True)
    np.testing.assert_allclose(read_embeddings(tmp_path / "out"), want, rtol=0, atol=1e-6)


# ---- folder states and resume ----------------------------------------------------------------


def test_embed_corpus_resume_redoes_only_missing_shards(model, tmp_path):
    from tarka_jax.corpus.store import read_embeddings, read_manifest, write_json_atomic

    path = _write(tmp_path, "txt", TEXTS)
    out = tmp_path / "out"
    _run(model, [path], out)
    full = read_embeddings(out)
    # What a kill leaves: shard 2 never renamed (a temporary of the run), manifest not
    # completed. A user's own hidden file that merely looks like a temporary stays.
    from tarka_jax.files.marker import read_marker, tmp_name

    run = read_marker(str(out)).runs[-1]
    os.remove(out / "shard-000002.npy")
    (out / tmp_name("shard-000002.npy", run)).write_bytes(b"\x93NUMPY partial")
    (out / ".shard-000002.npy.tmp999").write_bytes(b"mine")
    manifest = read_manifest(str(out))
    write_json_atomic(str(out / "manifest.json"), {**manifest, "complete": False}, run)
    before = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n.startswith("shard")}
    with pytest.raises(ValueError, match="incomplete: 1 of 5 shards missing"):
        read_embeddings(out)
    _run(model, [path], out, resume=True)
    after = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n.startswith("shard")}
    assert set(after) == set(before) | {"shard-000002.npy"}
    assert all(after[n] == t for n, t in before.items())  # done shards untouched
    assert [n for n in os.listdir(out) if "tmp" in n] == [".shard-000002.npy.tmp999"]
    np.testing.assert_array_equal(read_embeddings(out), full)


def test_embed_corpus_refuses_changed_settings_and_existing_folder(model, other_model,
                                                                   tmp_path):
    path = _write(tmp_path, "txt", TEXTS)
    out = tmp_path / "out"
    _run(model, [path], out, kind="document")
    with pytest.raises(ValueError, match="exists and is not empty; pass --resume"):
        _run(model, [path], out, kind="document")
    with pytest.raises(ValueError, match="settings differ.*prompt"):
        _run(model, [path], out, kind="query", resume=True)
    with pytest.raises(ValueError, match="settings differ.*model: 'm'"):
        _run(other_model, [path], out, kind="document", resume=True)
    with pytest.raises(ValueError, match="settings differ.*shard_size: 8 vs 9"):
        _run(model, [path], out, kind="document", resume=True, shard_size=9)
    with open(path, "a") as f:
        f.write("one more\n")
    with pytest.raises(ValueError, match="settings differ.*inputs"):
        _run(model, [path], out, kind="document", resume=True)
    with pytest.raises(ValueError, match="no manifest.json"):
        _run(model, [path], tmp_path / "empty", resume=True)
    _run(model, [path], out, kind="query", force=True)  # --force starts over
    from tarka_jax.corpus.store import read_embeddings

    assert read_embeddings(out).shape == (len(TEXTS) + 1, model.embedding_dim)


def test_embed_corpus_cli_and_search_index(jax_only_model, model, tmp_path, capsys):
    from tarka_jax.cli import main as cli_main

    def main(argv):
        return cli_main(["embed-corpus", *argv])

    from tarka_jax.corpus.search import print_index_hits, search_index

    path = _write(tmp_path, "jsonl", TEXTS)
    out = str(tmp_path / "out")
    assert main(["--model", jax_only_model, "--input", path, "--output", out, "--document",
                 "--id-field", "id", "--shard-size", "8", "--no-progress"]) == 0
    assert "40 records, 5 shards" in capsys.readouterr().out
    assert main(["--model", jax_only_model, "--input", path, "--output", out]) == 2
    assert "exists and is not empty" in capsys.readouterr().err

    queries = model.encode_query(["alpha beta", "record 3", "gamma gamma delta"])
    docs = model.encode_document(TEXTS)
    unit = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    want = q @ unit.T
    # chunk_rows 7: chunks cross shard ends and the last chunk of each shard is padded
    scores, rows = search_index(out, queries, top_k=6, chunk_rows=7)
    for s_row, r_row, w_row in zip(scores, rows, want):
        # the k best scores, and rows that really have them (near-ties may swap rows)
        np.testing.assert_allclose(s_row, np.sort(w_row)[::-1][:6], rtol=0, atol=1e-5)
        np.testing.assert_allclose(w_row[r_row], s_row, rtol=0, atol=1e-5)
        assert len(set(r_row.tolist())) == 6
    print_index_hits(model, out, ["alpha beta"], top_k=2)
    printed = capsys.readouterr().out
    assert f"[doc-{rows[0][0]}]" in printed and printed.count("\n") == 3

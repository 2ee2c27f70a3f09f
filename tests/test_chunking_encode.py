"""``encode(chunking=...)``, the per-call report and ``tarka-jax embed --chunking`` (no torch).

The numbers against sentence-transformers are in tests/test_chunking_parity.py; here
the plumbing: the default is untouched, "mean" of a text that fits is its truncated
embedding whatever the packing, the outputs' shapes and post-processing, the errors,
the report under threads, and the CLI's line on stderr.
"""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest

from tarka_jax import Embedder
from tarka_jax.cli import main
from tarka_jax.errors import UsageError
from tarka_jax.inference.chunked import ChunkedEmbeddings, ChunksCutWarning, EncodeReport
from tarka_jax.testing.reference import long_text

WINDOW = 24
SHORT = ["mars", "the red planet", "", "venus is a planet"]
LONG = [long_text(60, 1), long_text(200, 2)]  # 2-3 and ~10 windows of 24 tokens


@pytest.fixture(scope="module")
def model(jax_only_model):
    return Embedder.from_pretrained(jax_only_model, max_seq_length=WINDOW)


def test_default_is_truncation_and_the_report_counts_it(model):
    texts = SHORT + LONG
    report = EncodeReport()
    out = model.encode(texts, report=report)
    np.testing.assert_array_equal(out, model.encode(texts, chunking="truncate"))
    lengths = [len(x) for x in model.tokenizer.encode(texts)]
    assert report.truncated == [4, 5] and report.texts == report.inputs == 6
    assert report.tokens == sum(lengths) and report.chunking == "truncate"
    assert report.summary().startswith("2 of 6 texts were longer than max_seq_length (24 tokens)")
    report = EncodeReport()
    model.encode(SHORT, report=report)
    assert report.truncated == [] and report.summary() is None


def test_mean_of_a_text_that_fits_is_its_truncated_embedding(model):
    texts = SHORT + LONG
    truncated = model.encode(texts, prompt_name="query")
    for pack in (True, False):
        report = EncodeReport()
        mean = model.encode(texts, prompt_name="query", chunking="mean", pack=pack, report=report)
        assert mean.shape == truncated.shape and mean.dtype == np.float32
        np.testing.assert_allclose(mean[:4], truncated[:4], rtol=0, atol=1e-6)
        assert np.abs(mean[4:] - truncated[4:]).max() > 1e-2  # the rest of the text counts
        np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1, atol=1e-6)
        assert report.inputs > len(texts) and report.truncated == []
        if pack:
            packed = mean
    np.testing.assert_allclose(mean, packed, rtol=0, atol=1e-6)
    single = model.encode(LONG[1], prompt_name="query", chunking="mean")
    np.testing.assert_allclose(single, packed[5], rtol=0, atol=1e-6)


def test_chunks_rows_and_post_processing(model):
    texts = SHORT[:2] + LONG
    chunks = model.encode(texts, chunking="chunks", chunk_overlap=4)
    assert isinstance(chunks, ChunkedEmbeddings) and len(chunks) == chunks.embeddings.shape[0]
    assert np.bincount(chunks.text_index).tolist()[:2] == [1, 1]
    truncated = model.encode(texts)
    first = chunks.chunk_index == 0  # window 0 of every text is its truncated input
    np.testing.assert_allclose(chunks.embeddings[first], truncated, rtol=0, atol=1e-6)
    for i, text in enumerate(texts):
        rows = chunks.of_text(i)
        assert chunks.chunk_index[rows].tolist() == list(range(len(rows)))
        spans = chunks.char_spans[rows]
        assert spans[0, 0] == 0 and spans[-1, 1] == len(text.rstrip())
    small = model.encode(texts, chunking="chunks", chunk_overlap=4, truncate_dim=8,
                         normalize_embeddings=True, precision="int8")
    assert small.embeddings.shape == (len(chunks), 8) and small.embeddings.dtype == np.int8
    np.testing.assert_array_equal(small.char_spans, chunks.char_spans)
    tensor = model.encode(texts[3], chunking="chunks", chunk_overlap=4, convert_to_tensor=True)
    assert tensor.embeddings.shape == (int(np.sum(chunks.text_index == 3)), model.embedding_dim)
    assert not tensor.text_index.any()
    empty = model.encode([], chunking="chunks")
    assert len(empty) == 0 and empty.embeddings.shape == (0, model.embedding_dim)
    assert model.encode([], chunking="mean").shape == (0, model.embedding_dim)


def test_sentence_transformer_drop_in_takes_the_same_keywords(jax_only_model, model):
    from tarka_jax import SentenceTransformer

    st = SentenceTransformer(jax_only_model, max_seq_length=WINDOW)
    report = EncodeReport()
    got = st.encode_document(LONG, chunking="mean", chunk_overlap=2, report=report)
    np.testing.assert_array_equal(got, model.encode_document(LONG, chunking="mean",
                                                             chunk_overlap=2))
    assert report.chunking == "mean" and report.inputs > 2


def test_max_chunks_cut_warns_and_is_reported(model):
    report = EncodeReport()
    with pytest.warns(ChunksCutWarning, match=r"1 of 3 texts were longer than max_chunks=2 "
                                              r"windows of 24 tokens"):
        out = model.encode(SHORT[:2] + LONG[1:], chunking="mean", max_chunks=2, report=report)
    assert out.shape == (3, model.embedding_dim)
    assert report.truncated == [2] and report.inputs == 4 and report.max_chunks == 2


@pytest.mark.parametrize("kwargs,message", [
    (dict(chunking="windows"), "chunking must be one of"),
    (dict(chunking="mean", chunk_overlap=22), "chunk_overlap=22 must be smaller than the 22"),
    (dict(chunking="mean", chunk_overlap=True), "chunk_overlap must be an int"),
    (dict(chunking="chunks", max_chunks=0), "max_chunks must be an int"),
    (dict(chunking="mean", output_value="token_embeddings"), "chunking applies to sentence"),
    (dict(chunking="mean", prompt="x " * 30), r"the prompt \(30 tokens\) and 2 special tokens"),
])
def test_bad_chunking_settings_are_one_clear_error(model, kwargs, message):
    with pytest.raises(UsageError, match=message):
        model.encode(["mars", LONG[0]], **kwargs)


def test_reports_are_per_call_under_threads(model):
    """Each thread's report holds its own call's count, whatever the other thread does."""
    jobs = {0: SHORT, 1: SHORT + LONG, 2: LONG, 3: SHORT[:1] + LONG[:1]}
    expected = {k: [i for i, t in enumerate(v) if t in LONG] for k, v in jobs.items()}
    model.encode(SHORT + LONG)  # compile first, so the threads overlap in the passes
    for _ in range(3):
        reports = {k: EncodeReport() for k in jobs}
        threads = [threading.Thread(target=model.encode, args=(jobs[k],),
                                    kwargs={"report": reports[k], "batch_size": 2})
                   for k in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {k: r.truncated for k, r in reports.items()} == expected


# ---- tarka-jax embed --chunking ---------------------------------------------------------------


def _embed(capsys, jax_only_model, *args):
    assert main(["embed", "-m", jax_only_model, "--max-seq-length", str(WINDOW), *args]) == 0
    out = capsys.readouterr()
    return [json.loads(line) for line in out.out.splitlines()], out.err


def test_cli_says_how_many_inputs_were_truncated(jax_only_model, model, capsys):
    rows, err = _embed(capsys, jax_only_model, "mars", LONG[0], LONG[1])
    assert err.strip() == ("tarka-jax embed: 2 of 3 texts were longer than max_seq_length (24 "
                           "tokens) and were truncated (chunking 'mean' or 'chunks' embeds them "
                           "whole)")
    rows, err = _embed(capsys, jax_only_model, "mars", "venus")
    assert err == "" and len(rows) == 2


def test_cli_chunking_mean_and_chunks(jax_only_model, model, capsys, tmp_path):
    texts = ["mars", LONG[0]]
    rows, err = _embed(capsys, jax_only_model, "--chunking", "mean", "--document", *texts)
    assert err == "" and [r["text"] for r in rows] == texts
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]),
                               model.encode_document(texts, chunking="mean"), rtol=0, atol=1e-6)
    rows, err = _embed(capsys, jax_only_model, "--chunking", "chunks", "--chunk-overlap", "2",
                       "--max-chunks", "2", *texts)
    assert err.strip().startswith("tarka-jax embed: 1 of 2 texts were longer than max_chunks=2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChunksCutWarning)
        ref = model.encode(texts, chunking="chunks", chunk_overlap=2, max_chunks=2)
    assert [(r["text_index"], r["chunk_index"]) for r in rows] == [(0, 0), (1, 0), (1, 1)]
    for r, emb, span in zip(rows, ref.embeddings, ref.char_spans.tolist()):
        assert r["char_span"] == span and r["text"] == texts[r["text_index"]][slice(*span)]
        np.testing.assert_allclose(r["embedding"], emb, rtol=0, atol=1e-6)
    bad = ["embed", "-m", jax_only_model, "--chunking", "chunks", "-o", str(tmp_path / "x.npy"),
           "mars"]
    assert main(bad) == 2
    assert "--chunking chunks writes JSON lines" in capsys.readouterr().err
    assert main(["embed", "-m", jax_only_model, "--max-chunks", "0", "mars"]) == 2
    assert "max_chunks must be an int" in capsys.readouterr().err

"""sentence-transformers code runs unchanged on ``from tarka_jax import SentenceTransformer``.

A usage example written against sentence-transformers' API runs with both classes on
the same random-weight checkpoint and the results are compared: float32 embeddings
within 1e-5 (as the other parity tests), binary / ubinary quantisation equal,
similarity close. Then each ST constructor keyword and ``encode`` argument on its own.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch

F32_TOL = 1e-5
QUERIES = ["Which planet is known as the Red Planet?", "What is the capital of France?"]
DOCUMENTS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Paris is the capital and largest city of France.",
    "Saturn is famous for its rings.",
]


def usage_example(SentenceTransformer, path):
    """Typical sentence-transformers 6.x code; only the class passed in differs."""
    model = SentenceTransformer(path, device="cpu")
    query_embeddings = model.encode_query(QUERIES)
    document_embeddings = model.encode_document(DOCUMENTS)
    similarities = model.similarity(query_embeddings, document_embeddings)
    pairwise = model.similarity_pairwise(query_embeddings, document_embeddings[:2])

    small = SentenceTransformer(path, device="cpu", truncate_dim=8)
    small_queries = small.encode_query(QUERIES, normalize_embeddings=True)
    small_documents = small.encode_document(DOCUMENTS, normalize_embeddings=True)
    out = {
        "query": query_embeddings, "document": document_embeddings,
        "similarity": similarities, "pairwise": pairwise,
        "dim": model.get_embedding_dimension(), "small_dim": small.get_embedding_dimension(),
        "small_query": small_queries, "small_similarity": small.similarity(small_queries,
                                                                           small_documents),
        "max_seq_length": model.max_seq_length,
    }
    for precision in ("binary", "ubinary", "int8", "uint8"):
        out[precision] = model.encode_document(DOCUMENTS, precision=precision)
    return out


def _close(ours, ref, tol=F32_TOL):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())
    assert diff <= tol, diff


def _rel_close(ours, ref, tol=F32_TOL):
    """For unnormalised tensors (hidden states): relative to the reference's scale."""
    _close(ours, ref, tol * max(1.0, float(np.abs(np.asarray(ref)).max())))


@pytest.fixture(scope="module")
def ours(tiny_reference):
    from tarka_jax import SentenceTransformer

    return SentenceTransformer(tiny_reference, device="cpu")


def test_usage_example_matches_sentence_transformers(tiny_reference):
    import sentence_transformers

    import tarka_jax

    ref = usage_example(sentence_transformers.SentenceTransformer, tiny_reference)
    got = usage_example(tarka_jax.SentenceTransformer, tiny_reference)
    for key in ("query", "document", "small_query"):
        assert got[key].dtype == np.float32
        _close(got[key], ref[key])
    for key in ("similarity", "pairwise", "small_similarity"):
        _close(got[key], ref[key].numpy())
    assert (got["dim"], got["small_dim"], got["max_seq_length"]) == (
        ref["dim"], ref["small_dim"], ref["max_seq_length"])
    for key in ("binary", "ubinary"):  # signs of O(0.1) values: equal bit for bit
        assert got[key].dtype == ref[key].dtype and got[key].shape == ref[key].shape
        np.testing.assert_array_equal(got[key], ref[key])
    # int8 / uint8: floor((x - min) / step) with step ~ 1e-3; float32 embeddings that
    # agree to ~5e-7 can sit on either side of a bucket edge, so one bucket apart is
    # allowed here; the quantiser itself is checked bit for bit below.
    for key in ("int8", "uint8"):
        assert got[key].dtype == ref[key].dtype and got[key].shape == ref[key].shape
        assert np.abs(got[key].astype(int) - ref[key].astype(int)).max() <= 1


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary", "float32"])
def test_quantize_embeddings_equals_sentence_transformers(precision):
    from sentence_transformers.util import quantize_embeddings as st_quantize

    from tarka_jax.inference.quantize import quantize_embeddings

    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 13)).astype(np.float32)
    x[:, 3] = 0.25  # a zero-width dimension (step 1)
    calib = rng.standard_normal((50, 13)).astype(np.float32)
    for kwargs in ({}, {"calibration_embeddings": calib},
                   {"ranges": np.stack([calib.min(0), calib.max(0)])}):
        ref = st_quantize(x, precision=precision, **kwargs)
        got = quantize_embeddings(x, precision, **kwargs)
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref)
    tokens = [x[:5], x[5:12], x[12:13]]  # token embeddings: shared ranges
    for g, r in zip(quantize_embeddings(tokens, precision), st_quantize(tokens, precision)):
        np.testing.assert_array_equal(g, r)
    if precision.endswith("int8"):
        with pytest.raises(ValueError, match="single embedding"):
            quantize_embeddings(x[:1], precision)


def test_constructor_keywords_match_sentence_transformers(tiny_reference, tmp_path):
    import sentence_transformers

    import tarka_jax

    kwargs = {"device": "cpu", "cache_folder": str(tmp_path), "local_files_only": True,
              "prompts": {"query": "question: ", "mine": "custom: "},
              "default_prompt_name": "mine", "similarity_fn_name": "dot",
              "model_kwargs": {"attn_implementation": "eager"}, "revision": None, "token": None}
    ref = sentence_transformers.SentenceTransformer(tiny_reference, **kwargs)
    with pytest.warns(UserWarning, match="attn_implementation"):
        got = tarka_jax.SentenceTransformer(tiny_reference, **kwargs)
    assert got.prompts == ref.prompts and got.default_prompt_name == "mine"
    assert got.similarity_fn_name == ref.similarity_fn_name == "dot"
    _close(got.encode(DOCUMENTS), ref.encode(DOCUMENTS))  # the default prompt applies
    _close(got.encode_query(QUERIES), ref.encode_query(QUERIES))  # the overridden one
    q, d = got.encode_query(QUERIES), got.encode(DOCUMENTS)
    _close(got.similarity(q, d), ref.similarity(q, d).numpy(), 1e-4)
    with pytest.warns(UserWarning, match="trust_remote_code"):
        tarka_jax.Embedder.from_pretrained(tiny_reference, trust_remote_code=True)


def test_device_strings(tiny_reference, ours):
    import jax

    import tarka_jax

    assert ours.device == jax.devices("cpu")[0]
    tarka_jax.Embedder.from_pretrained(tiny_reference, device=["cpu"])
    for bad, why in (("cuda", "no gpu devices"), ("cuda:1", "no gpu devices"),
                     ("cpu:3", "only 1 cpu device"), ("banana", "not a device name"),
                     (["cpu", "cpu"], "names 2 devices")):
        with pytest.raises(ValueError, match=why):
            tarka_jax.SentenceTransformer(tiny_reference, device=bad)
    with pytest.raises(TypeError, match="modules"):
        tarka_jax.SentenceTransformer(modules=[])


def test_encode_arguments_positional_order_and_outputs(ours, tiny_st):
    import jax

    # ST's positional order: inputs, prompt_name, prompt, batch_size, show_progress_bar,
    # output_value, precision, convert_to_numpy.
    args = (DOCUMENTS, "query", None, 2, False, "sentence_embedding", "float32", True)
    _close(ours.encode(*args), tiny_st.encode(*args))
    args = (DOCUMENTS, None, None, 2, False, "sentence_embedding", "float32", True)
    _close(ours.encode_document(*args), tiny_st.encode_document(*args))
    tensor = ours.encode(DOCUMENTS, convert_to_tensor=True)
    assert isinstance(tensor, jax.Array) and tensor.shape == (5, ours.get_embedding_dimension())
    _close(np.asarray(tensor), tiny_st.encode(DOCUMENTS))
    rows = ours.encode(DOCUMENTS, convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == 5 and rows[0].shape == tensor.shape[1:]
    single = ours.encode(DOCUMENTS[0], precision="binary")
    np.testing.assert_array_equal(single, tiny_st.encode(DOCUMENTS[0], precision="binary"))
    with pytest.raises(ValueError, match="single embedding"):
        ours.encode(DOCUMENTS[0], precision="int8")  # as ST: nothing to calibrate on
    with pytest.raises(ValueError, match="precision must be one of"):
        ours.encode(DOCUMENTS, precision="int4")
    with pytest.raises(ValueError, match="output_value"):
        ours.encode(DOCUMENTS, output_value=None)
    with pytest.raises(ValueError, match="multi-process"):
        ours.encode(DOCUMENTS, pool={})


def test_token_embeddings_per_text_without_padding(ours, tiny_st):
    got = ours.encode(DOCUMENTS + [""], output_value="token_embeddings", batch_size=4)
    ref = tiny_st.encode(DOCUMENTS + [""], output_value="token_embeddings", batch_size=4)
    assert len(got) == len(ref) == 6
    for g, r in zip(got, ref):
        assert g.dtype == np.float32
        _rel_close(g, r.numpy())


def test_dimension_tokenize_and_similarity_helpers(ours, tiny_st):
    assert ours.get_embedding_dimension() == tiny_st.get_embedding_dimension()
    assert ours.get_sentence_embedding_dimension() == ours.get_embedding_dimension()
    got, ref = ours.preprocess(DOCUMENTS), tiny_st.preprocess(DOCUMENTS)
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key], ref[key].numpy())
    np.testing.assert_array_equal(ours.tokenize(DOCUMENTS)["input_ids"], got["input_ids"])
    emb = ours.encode(DOCUMENTS)
    flipped = np.ascontiguousarray(emb[::-1])
    _close(ours.similarity_pairwise(emb, flipped),
           tiny_st.similarity_pairwise(emb, flipped).numpy())
    with pytest.raises(ValueError, match=r"\[n, dim\] or \[dim\]"):
        ours.similarity(emb[None], emb)
    with pytest.raises(ValueError, match="as many rows"):
        ours.similarity_pairwise(emb, emb[:2])


def test_save_writes_a_folder_sentence_transformers_loads(tiny_reference, tmp_path):
    import sentence_transformers

    import tarka_jax

    model = tarka_jax.SentenceTransformer(tiny_reference, prompts={"mine": "custom: "},
                                          similarity_fn_name="dot")
    model.max_seq_length = 32
    out = str(tmp_path / "saved")
    model.save(out)
    model.save_pretrained(out)  # again: our own folder is replaced
    ref = sentence_transformers.SentenceTransformer(out, device="cpu")
    assert ref.prompts["mine"] == "custom: " and ref.similarity_fn_name == "dot"
    assert ref.max_seq_length == 32
    _close(model.encode(DOCUMENTS, prompt_name="mine"), ref.encode(DOCUMENTS, prompt_name="mine"))
    from tarka_jax.files.marker import UnsafeOutputError

    with pytest.raises(UnsafeOutputError, match="is the source"):
        model.save(tiny_reference)

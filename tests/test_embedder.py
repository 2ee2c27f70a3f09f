"""Embedder vs SentenceTransformer(folder).encode* on the same checkpoint; errors; packing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tarka_jax
from tarka_jax.inference import batching
from tarka_jax.inference import passes as passes_module
from tarka_jax.inference.embedder import Embedder
from tarka_jax.testing.reference import SAMPLE_TEXTS, long_text

# Mixed lengths in one batch: empty, 1-token, beyond the window radius (4), and
# beyond max_seq_length (64) so truncation keeps <bos> ... <eos>.
TEXTS = list(SAMPLE_TEXTS) + [
    long_text(120, seed=1),
    long_text(12, seed=2),
    "Héllo Wörld 日本語 🙂",
    long_text(40, seed=3),
]
F32_TOL = 1e-5


def _close(ours, ref, tol=F32_TOL):
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    diff = float(np.abs(ours - ref).max()) if ours.size else 0.0
    assert diff <= tol, diff


# ---- float32 parity -------------------------------------------------------------------------


@pytest.mark.torch
def test_embedder_encode_matches_sentence_transformers(tiny_embedder, tiny_st):
    _close(tiny_embedder.encode(TEXTS), tiny_st.encode(TEXTS))
    # Two batches, two length buckets, a padded tail (8 rows at 64, then 3 -> 4 rows at 16).
    _close(tiny_embedder.encode(TEXTS, batch_size=8, pack=False), tiny_st.encode(TEXTS))


@pytest.mark.torch
def test_embedder_query_document_prompts_match(tiny_embedder, tiny_st):
    _close(tiny_embedder.encode_query(TEXTS), tiny_st.encode_query(TEXTS))
    _close(tiny_embedder.encode_document(TEXTS), tiny_st.encode_document(TEXTS))
    for name in ("STS", "Clustering"):
        _close(tiny_embedder.encode(TEXTS, prompt_name=name),
               tiny_st.encode(TEXTS, prompt_name=name))
    _close(tiny_embedder.encode(TEXTS, prompt="custom: "), tiny_st.encode(TEXTS, prompt="custom: "))
    # An explicit prompt (even "") wins over the named one.
    _close(tiny_embedder.encode_query(TEXTS, prompt=""), tiny_st.encode(TEXTS))


@pytest.mark.torch
@pytest.mark.parametrize("normalize", [False, True])
def test_embedder_truncate_dim_matches(tiny_embedder, tiny_st, normalize):
    ours = tiny_embedder.encode_query(TEXTS, truncate_dim=10, normalize_embeddings=normalize)
    ref = tiny_st.encode_query(TEXTS, truncate_dim=10, normalize_embeddings=normalize)
    _close(ours, ref)
    norms = np.linalg.norm(ours, axis=-1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize


@pytest.mark.torch
def test_embedder_single_string_and_constructor_truncate_dim(tiny_reference, tiny_embedder,
                                                            tiny_st):
    one = tiny_embedder.encode("Which planet is known as the Red Planet?")
    assert one.shape == (tiny_embedder.embedding_dim,)
    _close(one, tiny_st.encode("Which planet is known as the Red Planet?"))
    small = Embedder.from_pretrained(tiny_reference, truncate_dim=8)
    assert small.get_sentence_embedding_dimension() == 8
    _close(small.encode(TEXTS[:3]), tiny_st.encode(TEXTS[:3], truncate_dim=8))


@pytest.mark.torch
def test_embedder_default_prompt_and_max_seq_length(tiny_reference, tiny_embedder):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(tiny_reference, device="cpu", default_prompt_name="STS")
    ours = Embedder(tiny_embedder.config, tiny_embedder.params, tiny_embedder.tokenizer,
                    prompts=tiny_embedder.prompts, default_prompt_name="STS")
    _close(ours.encode(TEXTS), st.encode(TEXTS))
    st.max_seq_length = 20
    short = Embedder.from_pretrained(tiny_reference, max_seq_length=20)
    assert short.max_seq_length == 20 and short.buckets == (16, 20)
    _close(short.encode(TEXTS, prompt=""), st.encode(TEXTS, prompt=""))


@pytest.mark.torch
def test_embedder_ignores_tokenizer_config_add_flags(tiny_reference, tmp_path):
    # transformers 5.24 drops add_bos_token / add_eos_token when tokenizer.json exists.
    from sentence_transformers import SentenceTransformer

    folder = str(tmp_path / "flags")
    shutil.copytree(tiny_reference, folder)
    path = f"{folder}/tokenizer_config.json"
    with open(path) as f:
        config = json.load(f)
    config.update(add_bos_token=True, add_eos_token=False)
    with open(path, "w") as f:
        json.dump(config, f)
    st = SentenceTransformer(folder, device="cpu")
    _close(Embedder.from_pretrained(folder).encode(TEXTS), st.encode(TEXTS))


@pytest.mark.torch
def test_embedder_functional_load_matches(tiny_reference, tiny_st):
    config, params, tokenizer = tarka_jax.load(tiny_reference)
    batch = tokenizer(TEXTS[:5], prompt="task: search result | query: ")
    assert batch["input_ids"].shape == (5, max(map(len, tokenizer.encode(TEXTS[:5], prompt=(
        "task: search result | query: ")))))
    # Padded to a shape the Embedder tests already compiled (16 rows x 64), through the
    # same jit of tarka_jax.embed: eager Flax would take seconds, a new shape a compile.
    batch = tokenizer(TEXTS[:5], prompt="task: search result | query: ", buckets=(64,),
                      pad_batch_to=16)
    out = np.asarray(passes_module._embed_jit(params, batch, config))[:5, 0]
    _close(out, tiny_st.encode_query(TEXTS[:5]))


# ---- bfloat16 -------------------------------------------------------------------------------

# bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%) in every matmul
# input and activation; norms, softmax, pooling and normalisation stay float32.
# Measured worst cosine to the float32 PyTorch output over 24 mixed-length texts:
# 0.99987 on this 3-layer reference, 0.99965 on a 12-layer / hidden-96 one (the error
# grows with depth, roughly linearly in 1 - cos). The bound leaves ~5x headroom over
# the 12-layer figure, so a real regression (e.g. a bfloat16 softmax or norm: 1 - cos
# of 1e-2 and more) fails while rounding noise does not.
BF16_MIN_COSINE = 0.998


@pytest.mark.torch
def test_embedder_bfloat16_close_to_float32_reference(tiny_reference, tiny_st):
    ours = Embedder.from_pretrained(tiny_reference, dtype="bfloat16").encode_query(TEXTS)
    ref = tiny_st.encode_query(TEXTS)
    cosine = (ours * ref).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert ours.dtype == np.float32
    assert cosine.min() >= BF16_MIN_COSINE, cosine.min()


# ---- packing, order, compilations (no torch) ------------------------------------------------


@pytest.fixture(scope="module")
def small(jax_only_model):
    return Embedder.from_pretrained(jax_only_model)


def test_embedder_packing_equals_unpacked(small):
    plain = small.encode(TEXTS, pack=False)
    packed = small.encode(TEXTS, batch_size=4, pack=True)
    _close(packed, plain)
    _close(small.encode_document(TEXTS), small.encode_document(TEXTS, pack=False))
    assert small.pack  # packing is the default


def test_embedder_pass_tokens_change_shapes_not_embeddings(small):
    """CPU caps a pass at batching.PASS_TOKENS token slots; any cap gives the same vectors."""
    assert small.pass_tokens == batching.PASS_TOKENS["cpu"]
    try:
        small.pass_tokens = None
        whole = [small.encode(TEXTS, pack=pack) for pack in (True, False)]
        small.pass_tokens = 64
        small.compiled_shapes.clear()
        capped = [small.encode(TEXTS, pack=pack) for pack in (True, False)]
        assert all(rows * width <= 64 or rows == 1 for rows, width, _ in small.compiled_shapes)
    finally:
        small.pass_tokens = batching.PASS_TOKENS["cpu"]
    for a, b in zip(capped, whole):
        _close(a, b)


def test_embedder_restores_order_and_ignores_batching(small, capsys):
    full = small.encode(TEXTS)
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    _close(small.encode([TEXTS[i] for i in perm], batch_size=4, show_progress_bar=True),
           full[perm])
    assert "Batches" in capsys.readouterr().err
    _close(small.encode(TEXTS[4]), full[4])


def test_embedder_compilations_are_bounded(small):
    # jax_only_model truncates at 48 tokens: buckets (16, 32, 48).
    assert small.buckets == (16, 32, 48)
    lengths = [len(x) for x in small.tokenizer.encode(TEXTS)]
    before = passes_module._embed_jit._cache_size()
    small.compiled_shapes.clear()
    small.encode(TEXTS, batch_size=4, pack=False)
    widths = sorted({w for _, w, _ in small.compiled_shapes})
    assert set(widths) <= {16, 32, 48}
    # batches of 4 sorted by length: full ones are 4 rows, the tail as many as it has.
    assert {r for r, _, _ in small.compiled_shapes} <= {1, 2, 3, 4}
    assert len(small.compiled_shapes) <= len(widths) + 1
    assert passes_module._embed_jit._cache_size() - before <= len(small.compiled_shapes)
    # A second call with other texts of the same buckets compiles nothing new.
    after = passes_module._embed_jit._cache_size()
    small.encode([t + " again" for t in TEXTS], batch_size=4, pack=False)
    assert passes_module._embed_jit._cache_size() == after
    assert max(lengths) == 48


def test_embedder_similarity(small):
    a = small.encode(["mars", "venus"])
    b = small.encode(["mars", "jupiter", "saturn"])
    sim = small.similarity(a, b)
    assert sim.shape == (2, 3)
    assert sim[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert small.similarity(a[0], b).shape == (1, 3)


# ---- errors: raised before any jax work -----------------------------------------------------


@pytest.fixture
def no_jax(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the forward pass ran")

    monkeypatch.setattr(passes_module, "_embed_jit", fail)


def test_embedder_input_errors(small, no_jax):
    with pytest.raises(TypeError, match=r"texts\[2\] is a int"):
        small.encode(["a", "b", 7])
    with pytest.raises(TypeError, match=r"texts\[0\] is a NoneType"):
        small.encode_query([None])
    with pytest.raises(ValueError, match=r"unknown prompt name 'nope'; valid names: 'query', "):
        small.encode(["a"], prompt_name="nope")
    for bad in (0, -3, 25, 2.5, True):
        with pytest.raises(ValueError, match=r"truncate_dim must be an int in 1\.\.24"):
            small.encode(["a"], truncate_dim=bad)
    with pytest.raises(ValueError, match="batch_size"):
        small.encode(["a"], batch_size=0)
    assert small.encode([]).shape == (0, 24)
    assert small.encode([], truncate_dim=5).shape == (0, 5)


def test_embedder_empty_string_embeds(small):
    out = small.encode(["", "mars"])
    assert out.shape == (2, 24) and np.isfinite(out).all()
    assert np.linalg.norm(out[0]) == pytest.approx(1.0, abs=1e-5)


def test_embedder_load_errors(jax_only_model, tmp_path):
    with pytest.raises(ValueError, match="float16 is not supported"):
        Embedder.from_pretrained(jax_only_model, dtype="float16")
    with pytest.raises(ValueError, match="unknown attention implementation"):
        Embedder.from_pretrained(jax_only_model, attention="magic")
    with pytest.raises(FileNotFoundError, match="not found"):
        Embedder.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="truncate_dim"):
        Embedder.from_pretrained(jax_only_model, truncate_dim=1000)

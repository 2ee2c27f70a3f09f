"""The functional encoder against sentence-transformers on checkpoints built here.

Token ids come from sentence-transformers' own preprocessing, so these tests
isolate the forward pass (the tokenizer has its own tests).

Tolerances. Sentence embeddings are unit vectors, so an absolute bound is a
relative one: max |diff| <= 1e-5 (measured 3-5e-7 on these models: >= 20x
margin). Hidden states are not normalised (max |value| ~ 5 here), and float32
rounding grows with the values summed, so they are compared relative to their
own scale, ``max |diff| / max |ref|`` (:func:`tarka_jax.testing.reference.scale_relative_error`):
measured 1.1-2.0e-6 over three seeds, bound 1e-5 (>= 5x margin; an absolute 1e-5
bound once failed at 1.007e-5 on CI, i.e. 2e-6 relative).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tarka_jax.convert import open_model
from tarka_jax.nn.encoder import embed, token_embeddings
from tarka_jax.testing.reference import SAMPLE_TEXTS, long_text, scale_relative_error

pytestmark = pytest.mark.torch

# Mixed lengths: the long ones exceed every test window, so sliding layers see
# fully-masked padding rows (docs/numerics.md, "Padding") in the same batch.
TEXTS = list(SAMPLE_TEXTS) + [long_text(45, 1), long_text(12, 2)]


def _st_batch(st, texts):
    feats = st[0].preprocess(texts)
    ids = feats["input_ids"].numpy().astype(np.int32)
    mask = feats["attention_mask"].numpy().astype(np.int32)
    positions = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int32), ids.shape)
    return {"input_ids": ids, "segment_ids": mask, "positions": np.ascontiguousarray(positions)}


def _ours(folder, texts, st, **kw):
    ck = open_model(folder)
    return np.asarray(embed(ck.params, _st_batch(st, texts), ck.config, **kw))[:, 0]


# name -> TinySpec fields: GQA 4:2, MQA 3:1, scalar != head_dim, tiny and odd windows,
# no Dense head, the legacy Hub layout with "model."-prefixed keys.
CASES = {
    "gqa": {},
    "mqa_odd_window": dict(num_heads=3, num_kv_heads=1, head_dim=16, hidden_size=42,
                           query_pre_attn_scalar=16, sliding_window=7, dense=(32,),
                           layer_types=("sliding_attention", "full_attention",
                                        "sliding_attention", "sliding_attention")),
    "no_dense_legacy_prefixed": dict(dense=(), legacy_module_types=True, model_prefix=True,
                                     sliding_window=6, seed=3),
}


@pytest.mark.parametrize("attention", [None, "pallas_triton"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_embed_matches_sentence_transformers_float32(reference_factory, case, attention):
    """Both attention implementations (Pallas in interpret mode on CPU) give ST's embeddings."""
    from sentence_transformers import SentenceTransformer

    fields = dict(CASES[case])
    if "layer_types" in fields:
        fields["num_layers"] = len(fields["layer_types"])
    folder = reference_factory(case, **fields)
    st = SentenceTransformer(folder, device="cpu")
    ref = st.encode(TEXTS, batch_size=len(TEXTS))
    ours = _ours(folder, TEXTS, st, attention=attention)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-5


def test_token_embeddings_match_last_hidden_state(tiny_reference, tiny_st):
    import torch

    batch = _st_batch(tiny_st, TEXTS)
    with torch.no_grad():
        out = tiny_st[0].auto_model(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                                    attention_mask=torch.tensor(batch["segment_ids"]))
    ref = out.last_hidden_state.numpy()
    ck = open_model(tiny_reference)
    ours = np.asarray(token_embeddings(ck.params, batch, ck.config))
    real = batch["segment_ids"].astype(bool)  # padding rows are garbage in HF, zeros-fed here
    # Unnormalised O(1)-O(5) values: relative to their scale (module docstring).
    assert scale_relative_error(ours[real], ref[real]) <= 1e-5


def test_embed_bfloat16_close_to_float32_reference(tiny_reference, tiny_st):
    # bf16 has an 8-bit mantissa; through 3 layers + 2 Dense layers we measured
    # cosine >= 0.9999 to the float32 reference; 0.999 leaves headroom for
    # other CPUs without letting a real bug (cos ~0.9 or lower) through.
    ref = tiny_st.encode(TEXTS)
    ours = _ours(tiny_reference, TEXTS, tiny_st, dtype="bfloat16")
    cosine = np.sum(ours * ref, -1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert np.all(np.isfinite(ours))
    assert cosine.min() >= 0.999


def test_embed_left_and_right_padding_agree(tiny_reference, tiny_st):
    """RoPE and the window are relative: shifting real tokens changes nothing."""
    ck = open_model(tiny_reference)
    batch = _st_batch(tiny_st, TEXTS)
    right = np.asarray(embed(ck.params, batch, ck.config))
    ids, seg = batch["input_ids"], batch["segment_ids"]
    t = ids.shape[1]
    left = {k: np.zeros_like(v) for k, v in batch.items()}
    for r in range(ids.shape[0]):
        n = int(seg[r].sum())
        left["input_ids"][r, t - n:] = ids[r, :n]
        left["segment_ids"][r, t - n:] = 1
        left["positions"][r, t - n:] = np.arange(n)
    assert np.abs(np.asarray(embed(ck.params, left, ck.config)) - right).max() <= 1e-5


def test_embed_packed_rows_equal_unpacked(tiny_reference, tiny_st):
    ck = open_model(tiny_reference)
    texts = TEXTS[:4]
    single = _st_batch(tiny_st, texts)
    lengths = single["segment_ids"].sum(1)
    t = int(lengths.sum())
    packed = {k: np.zeros((1, t), np.int32) for k in single}
    start = 0
    for r, n in enumerate(lengths):
        packed["input_ids"][0, start:start + n] = single["input_ids"][r, :n]
        packed["segment_ids"][0, start:start + n] = r + 1
        packed["positions"][0, start:start + n] = np.arange(n)
        start += n
    ours = np.asarray(embed(ck.params, packed, ck.config, segments_per_row=len(texts)))[0]
    ref = np.asarray(embed(ck.params, single, ck.config))[:, 0]
    assert np.abs(ours - ref).max() <= 1e-5


def test_embed_is_differentiable_and_vmappable(tiny_reference, tiny_st):
    ck = open_model(tiny_reference)
    batch = {k: jnp.asarray(v) for k, v in _st_batch(tiny_st, TEXTS[:3]).items()}

    def loss(params):
        return jnp.sum(embed(params, batch, ck.config)[:, 0, 0])

    grads = jax.jit(jax.grad(loss))(ck.params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
    # vmap over a stack of two batches gives the per-batch results.
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, a[::-1]]), batch)
    both = jax.vmap(lambda b: embed(ck.params, b, ck.config))(stacked)
    direct = embed(ck.params, batch, ck.config)
    assert np.abs(np.asarray(both[0]) - np.asarray(direct)).max() <= 1e-6
    assert np.abs(np.asarray(both[1]) - np.asarray(direct)[::-1]).max() <= 1e-6


def test_float16_is_refused(tiny_reference, tiny_st):
    ck = open_model(tiny_reference)
    with pytest.raises(ValueError, match="float16"):
        embed(ck.params, _st_batch(tiny_st, ["x"]), ck.config, dtype="float16")


def test_pallas_gradients_match_xla_through_the_model(tiny_reference, tiny_st):
    """Training through the Pallas backward (interpret mode) gives XLA's parameter gradients."""
    ck = open_model(tiny_reference)
    batch = {k: jnp.asarray(v) for k, v in _st_batch(tiny_st, TEXTS[:5]).items()}
    direction = jax.random.normal(jax.random.key(1), (5, 1, ck.config.embedding_dim))

    def grads(attention):
        def loss(params):
            return jnp.sum(embed(params, batch, ck.config, attention=attention) * direction)
        return jax.tree_util.tree_leaves(jax.jit(jax.grad(loss))(ck.params))

    for ours, ref in zip(grads("pallas_triton"), grads("xla")):
        ours, ref = np.asarray(ours), np.asarray(ref)
        assert np.linalg.norm(ours - ref) <= 1e-5 * max(np.linalg.norm(ref), 1e-6)

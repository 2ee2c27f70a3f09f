"""The contrastive loss in JAX alone: GradCache equals the direct gradient; config errors.

The torch parity (every loss against sentence-transformers' classes) is
``test_finetune_parity.py``; this file needs no torch.
"""

from __future__ import annotations

import numpy as np
import pytest


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def model():
    import jax

    from tarka_jax.nn.config import DenseSpec, ModelConfig
    from tarka_jax.nn.encoder import init_params

    config = ModelConfig(vocab_size=97, hidden_size=40, intermediate_size=44, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=10, query_pre_attn_scalar=10,
                         layer_types=("sliding_attention", "full_attention"), sliding_window=6,
                         dense=(DenseSpec(40, 20),))
    return config, jax.device_get(init_params(config, jax.random.key(3)))


def _columns(n_cols, b=12, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for t in (9, 17, 13)[:n_cols]:
        lengths = rng.integers(2, t + 1, size=b)
        seg = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
        out.append({"input_ids": np.where(seg > 0, rng.integers(3, 97, (b, t)), 0).astype(np.int32),
                    "segment_ids": seg,
                    "positions": np.where(seg > 0, np.arange(t)[None], 0).astype(np.int32)})
    return out


@pytest.mark.slow  # leg 1 only (~40-80 s: two losses, four mini-batch sizes compiled)
def test_finetune_cached_loss_equals_uncached(model):
    import jax

    from tarka_jax.finetune.loss import ContrastiveLossConfig, loss_and_grads
    from tarka_jax.finetune.step import FinetuneStepConfig, embed_fn

    config, params = model
    columns = _columns(3)
    results = {}
    # Every direction, hard negatives and Matryoshka dims: all of the loss at once
    # (each form alone is checked against sentence-transformers in test_finetune_parity).
    kwargs = {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"),
              "matryoshka_dims": (20, 8), "matryoshka_weights": (1.0, 0.3)}
    for mini in (0, 4):  # 3 mini-batches of the 12-row batch
        cfg = ContrastiveLossConfig(mini_batch_size=mini, **kwargs)
        fn = embed_fn(FinetuneStepConfig(model=config, loss=cfg))
        results[mini] = jax.device_get(
            jax.jit(lambda p, c, cfg=cfg, fn=fn: loss_and_grads(fn, p, c, cfg))(params, columns))
    loss, grads = results[0]
    assert np.isfinite(loss) and loss > 0.1
    assert _rel(results[4][0], loss) <= 1e-6
    for (path, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(results[4][1])[0],
                                 jax.tree_util.tree_flatten_with_path(grads)[0]):
        assert _rel(a, b) <= 1e-5, (path, _rel(a, b))


def test_finetune_loss_ranks_the_positive(model):
    """Sanity of the definition on hand-made embeddings: log(B) at chance, ~0 when perfect."""
    import jax.numpy as jnp

    from tarka_jax.finetune.loss import mnrl

    b = 8
    same = jnp.ones((b, 4))
    assert abs(float(mnrl(same, [same])) - np.log(b)) < 1e-5  # every candidate ties
    eye = jnp.eye(b)
    assert float(mnrl(eye, [eye])) < 1e-6  # cos 1 vs 0, scale 20: exp(-20) per negative
    # A hard-negative column that equals the positives doubles the ties of the true column.
    assert abs(float(mnrl(eye, [eye, eye])) - np.log(2)) < 1e-5


def test_finetune_loss_config_errors_name_the_setting():
    from tarka_jax.finetune.loss import ContrastiveLossConfig, ContrastiveLossError

    for kwargs, needle in [
        ({"scale": 0}, "loss.scale"),
        ({"directions": ("doc_to_query",)}, "query_to_doc"),
        ({"directions": ("query_to_doc", "sideways")}, "loss.directions"),
        ({"partition_mode": "split"}, "partition_mode"),
        ({"directions": ("query_to_doc", "doc_to_doc"), "partition_mode": "per_direction"},
         "joint"),
        ({"matryoshka_dims": (8, 8)}, "duplicates"),
        ({"matryoshka_dims": (8, 4), "matryoshka_weights": (1.0,)}, "one weight"),
        ({"mini_batch_size": -1}, "mini_batch_size"),
    ]:
        with pytest.raises(ContrastiveLossError, match=needle):
            ContrastiveLossConfig(**kwargs)
    with pytest.raises(ContrastiveLossError, match="exceed the model's embedding dim 20"):
        ContrastiveLossConfig(matryoshka_dims=(32, 8)).dims_and_weights(20)
    assert ContrastiveLossConfig(matryoshka_dims=(8, 20)).dims_and_weights(20) == [
        (20, 1.0), (8, 1.0)]


def test_contrastive_loss_has_finite_gradients_at_an_all_zero_embedding():
    """A pooled vector of zeros (an empty packed slot, a fully padded row) must not send NaN
    into every parameter: the loss normalises with numerics.l2_normalize, not x / max(|x|, eps)."""
    import jax
    import jax.numpy as jnp

    from tarka_jax.finetune.loss import ContrastiveLossConfig, contrastive_loss

    rng = np.random.default_rng(0)
    anchors = jnp.asarray(rng.standard_normal((4, 8)), jnp.float32).at[1].set(0.0)
    docs = jnp.asarray(rng.standard_normal((4, 8)), jnp.float32).at[2].set(0.0)
    for cfg in (ContrastiveLossConfig(), ContrastiveLossConfig(matryoshka_dims=(8, 4))):
        grads = jax.grad(lambda a, d: contrastive_loss([a, d], cfg), argnums=(0, 1))(anchors, docs)
        for g in grads:
            assert np.isfinite(np.asarray(g)).all()

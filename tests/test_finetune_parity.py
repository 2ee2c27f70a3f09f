"""Contrastive losses equal sentence-transformers' own, loss and gradients.

The model is a random-weight sentence-transformers folder built by transformers +
sentence-transformers (``reference_factory``); PyTorch runs the real ST loss
classes (MultipleNegativesRankingLoss with and without hard negatives and in its
symmetric / all-direction forms, CachedMultipleNegativesRankingLoss with
mini-batches smaller than the batch, MatryoshkaLoss around both) on the real
``SentenceTransformer`` loaded from that folder; JAX runs
:func:`tarka_jax.finetune.loss.loss_and_grads` on our params loaded from the same
folder. Gradients are mapped to HF names through the converter's key table.
Tolerances are relative, tensor-wise (Frobenius norm).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch

ANCHORS = [
    "Which planet is known as the Red Planet?",
    "jax flax torch",
    "what is a sliding window attention layer",
    "x",
    "the teacher model and the student",
    "gas giant with a ring",
]
POSITIVES = [
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "flax is a neural network library for jax, torch is another one",
    "attention where each token sees the tokens of a window around it in the layer",
    "a single letter",
    "the student model learns the embedding space of the teacher model for search",
    "Saturn, famous for its rings, is a gas giant.",
]
NEGATIVES = [
    "Venus is often called Earth's twin because of its similar size.",
    "numpy arrays on the cpu",
    "full attention sees every token of the text at once",
    "many many letters in a long sentence about the moon and the sun and a star",
    "the kernel of a batch",
    "Jupiter has a prominent red spot.",
]
SYMMETRIC = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
ALL_DIRECTIONS = {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")}

CASES = {  # name: (columns, ST loss kwargs, matryoshka (dims, weights) or None, cached)
    "mnrl": (2, {}, None, False),
    "mnrl_hard_negatives_all_directions": (3, {"scale": 10.0, **ALL_DIRECTIONS}, None, False),
    "mnrl_symmetric": (2, SYMMETRIC, None, False),
    "cached_mnrl_hard_negatives": (3, {}, None, True),
    "matryoshka_mnrl": (3, {}, ((24, 12, 7), (1.0, 0.5, 0.25)), False),
}
MINI = 2  # ST's mini_batch_size and ours: 3 mini-batches of the 6-row batch


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _hf_name(name: str) -> str:
    """ST parameter name -> the converter's key ("0.auto_model.layers.0..." -> "layers.0...")."""
    index, rest = name.split(".", 1)
    if index == "0":
        return rest.split(".", 1)[1]
    return f"dense_{int(index) - 2}.{rest}"


@pytest.fixture(scope="module")
def setup(reference_factory):
    import jax
    from sentence_transformers import SentenceTransformer

    from tarka_jax.convert import open_model
    from tarka_jax.text.tokenizer import TextTokenizer

    folder = reference_factory("tiny")
    ckpt = open_model(folder)
    tok = TextTokenizer.from_folder(folder)
    columns = [tok(texts) for texts in (ANCHORS, POSITIVES, NEGATIVES)]
    assert all((c["segment_ids"] == 0).any() for c in columns)  # padding is exercised
    model = SentenceTransformer(folder, device="cpu").eval()
    return ckpt, jax.device_get(ckpt.params), columns, model


def _st_loss(model, name):
    from sentence_transformers.sentence_transformer import losses

    _, kwargs, matryoshka, cached = CASES[name]
    if cached:
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=MINI, **kwargs)
    else:
        loss = losses.MultipleNegativesRankingLoss(model, **kwargs)
    if matryoshka is not None:
        dims, weights = matryoshka
        loss = losses.MatryoshkaLoss(model, loss, list(dims), list(weights))
    return loss


@pytest.mark.parametrize("name", list(CASES))
def test_finetune_loss_and_grads_match_sentence_transformers(setup, name):
    import jax
    import torch

    from tarka_jax.convert.mapping import params_to_hf
    from tarka_jax.finetune.loss import ContrastiveLossConfig, loss_and_grads
    from tarka_jax.finetune.step import FinetuneStepConfig, embed_fn

    ckpt, params, columns, model = setup
    n_cols, kwargs, matryoshka, cached = CASES[name]
    cols = columns[:n_cols]

    model.zero_grad()
    features = [{"input_ids": torch.from_numpy(c["input_ids"].astype(np.int64)),
                 "attention_mask": torch.from_numpy((c["segment_ids"] > 0).astype(np.int64))}
                for c in cols]
    loss = _st_loss(model, name)(features, None)
    loss.backward()
    named = dict(model.named_parameters())
    t_grads = {_hf_name(n): p.grad.detach().numpy().copy() for n, p in named.items()}

    dims, weights = matryoshka if matryoshka is not None else ((), ())
    cfg = ContrastiveLossConfig(scale=kwargs.get("scale", 20.0),
                                directions=kwargs.get("directions", ("query_to_doc",)),
                                partition_mode=kwargs.get("partition_mode", "joint"),
                                matryoshka_dims=dims, matryoshka_weights=weights,
                                mini_batch_size=MINI if cached else 0)
    fn = embed_fn(FinetuneStepConfig(model=ckpt.config, loss=cfg))
    j_loss, j_grads = jax.jit(lambda p, c: loss_and_grads(fn, p, c, cfg))(params, cols)

    assert _rel(j_loss, loss.item()) <= 1e-5, (float(j_loss), loss.item())
    j_hf = params_to_hf(jax.device_get(j_grads), ckpt.config)
    assert set(j_hf) == set(t_grads)
    assert np.linalg.norm(t_grads["layers.0.self_attn.q_proj.weight"]) > 1e-4  # not vacuous
    worst = max((_rel(j_hf[k], t_grads[k]), k) for k in t_grads)
    assert worst[0] <= 1e-4, worst

"""Three distillation steps in JAX equal the same steps written in PyTorch.

The teacher and student are random-weight sentence-transformers folders built by
transformers + sentence-transformers (different sizes, seeds and tokenizer
vocabularies). PyTorch runs the ST modules themselves, the loss mirrored from
``tarka_jax.distill.loss`` and ``torch.optim.AdamW`` after ``clip_grad_norm_``.
Tolerances are relative, tensor-wise (``|a - b| / |b|`` in the Frobenius norm).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch

TEXTS = [
    "Which planet is known as the Red Planet?",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "jax flax torch",
    "the teacher model and the student model share a sentence embedding space for search",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
    "x",
]
# Adam's first steps move every element by ~lr whatever its gradient's size, so
# an element whose gradient is ~1e-9 (float32 noise level) moves by its noise:
# a moderate lr and eps = 1e-6 keep that amplification below the 1e-5 param
# tolerance while each step still changes the params by ~1e-2 relative.
LR, WD, CLIP = 5e-3, 0.1, 0.05
BETAS, EPS = (0.9, 0.99), 1e-6


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _torch_loss(torch, s, t, *, dims, cosine, mse, kl, temperature):
    F = torch.nn.functional
    terms = {"cosine": [], "mse": [], "kl": []}
    for m in dims:
        sm = F.normalize(s[:, :m], dim=-1, eps=1e-12)
        tm = F.normalize(t[:, :m], dim=-1, eps=1e-12)
        terms["cosine"].append((1 - (sm * tm).sum(-1)).mean())
        terms["mse"].append(((sm - tm) ** 2).mean())
        off = ~torch.eye(s.shape[0], dtype=torch.bool)
        ls = (sm @ sm.T / temperature).masked_fill(~off, float("-inf")).log_softmax(-1)
        lt = (tm @ tm.T / temperature).masked_fill(~off, float("-inf")).log_softmax(-1)
        diff = torch.where(off, lt - ls, torch.zeros_like(ls))
        terms["kl"].append((lt.exp() * diff).sum(-1).mean())
    out = {k: sum(v) / len(v) for k, v in terms.items()}
    return cosine * out["cosine"] + mse * out["mse"] + kl * out["kl"], out


def _hf_name(name: str) -> str:
    """ST parameter name -> the converter's key ("0.auto_model.layers.0..." -> "layers.0...")."""
    index, rest = name.split(".", 1)
    if index == "0":
        return rest.split(".", 1)[1]  # drop the Transformer's inner-model attribute
    return f"dense_{int(index) - 2}.{rest}"


def test_distill_step_matches_pytorch(reference_factory):
    import jax
    import torch
    from sentence_transformers import SentenceTransformer

    from tarka_jax.convert import open_model
    from tarka_jax.convert.mapping import params_to_hf
    from tarka_jax.distill.loss import LossConfig
    from tarka_jax.distill.step import StepConfig, loss_and_grads, make_train_step
    from tarka_jax.text.tokenizer import TextTokenizer
    from tarka_jax.train import sharding as shd
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer
    from tarka_jax.train.state import create_state, shard_params

    student_dir = reference_factory("tiny")
    teacher_dir = reference_factory("distill_teacher", vocab_size=199, hidden_size=40,
                                    intermediate_size=44, num_layers=2, num_heads=2,
                                    num_kv_heads=1, head_dim=14, query_pre_attn_scalar=14,
                                    dense=(32, 24), seed=5)
    student, teacher = open_model(student_dir), open_model(teacher_dir)
    batch = {"student": TextTokenizer.from_folder(student_dir)(TEXTS),
             "teacher": TextTokenizer.from_folder(teacher_dir)(TEXTS)}
    assert (batch["student"]["segment_ids"] == 0).any()  # padding is exercised

    loss_cfg = LossConfig(cosine=1.0, mse=0.5, kl=1.0, temperature=0.1, matryoshka_dims=(24, 12))
    opt_cfg = OptimizerConfig(learning_rate=LR, schedule="constant", warmup_steps=0,
                              b1=BETAS[0], b2=BETAS[1], eps=EPS, weight_decay=WD, clip_norm=CLIP)
    tx, schedule = make_optimizer(opt_cfg, total_steps=3)
    cfg = StepConfig(student=student.config, teacher=teacher.config, loss=loss_cfg)
    mesh = shd.make_mesh(1, 1, devices=jax.devices()[:1])
    state, state_sh = create_state(student.params, tx, mesh)
    teacher_params, teacher_sh = shard_params(teacher.params, mesh)
    step_fn = make_train_step(cfg, tx, schedule, mesh, state_sh, teacher_sh)
    grads_fn = jax.jit(lambda p, t, b: loss_and_grads(cfg, p, t, b))

    torch.manual_seed(0)
    st_s = SentenceTransformer(student_dir, device="cpu").eval()
    st_t = SentenceTransformer(teacher_dir, device="cpu").eval()
    named = dict(st_s.named_parameters())
    decay = [p for n, p in named.items() if p.ndim >= 2]
    no_decay = [p for n, p in named.items() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)

    def features(part):
        return {"input_ids": torch.from_numpy(part["input_ids"].astype(np.int64)),
                "attention_mask": torch.from_numpy((part["segment_ids"] > 0).astype(np.int64))}

    with torch.no_grad():
        t_emb = st_t(features(batch["teacher"]))["sentence_embedding"]

    start = params_to_hf(student.params, student.config)
    assert set(start) == {_hf_name(n) for n in named}
    for name, p in named.items():  # same starting point: guards the name mapping
        np.testing.assert_array_equal(start[_hf_name(name)], p.detach().numpy())

    for step in range(3):
        (j_loss, _), j_grads = grads_fn(state["params"], teacher_params, batch)
        state, metrics = step_fn(state, teacher_params, batch)

        opt.zero_grad()
        s_emb = st_s(features(batch["student"]))["sentence_embedding"]
        loss, terms = _torch_loss(torch, s_emb, t_emb, dims=(24, 12), cosine=1.0, mse=0.5,
                                  kl=1.0, temperature=0.1)
        loss.backward()
        t_grads = {_hf_name(n): p.grad.detach().numpy().copy() for n, p in named.items()}
        total = torch.nn.utils.clip_grad_norm_(st_s.parameters(), CLIP)
        assert float(total) > 2 * CLIP, "the clip must actually clip"
        opt.step()

        assert _rel(metrics["loss"], loss.item()) <= 1e-5, (step, float(metrics["loss"]), loss.item())
        assert _rel(j_loss, loss.item()) <= 1e-5
        for k in ("cosine", "mse", "kl"):
            assert _rel(metrics[k], terms[k].item()) <= 1e-5, (step, k)
        assert _rel(metrics["grad_norm"], float(total)) <= 1e-4

        j_hf = params_to_hf(jax.device_get(j_grads), student.config)
        after = params_to_hf(jax.device_get(state["params"]), student.config)
        moved = _rel(np.concatenate([v.ravel() for v in after.values()]),
                     np.concatenate([v.ravel() for v in start.values()]))
        assert moved > 100 * 1e-5, moved  # the update is far above the tolerance
        for name, p in named.items():
            key = _hf_name(name)
            assert _rel(j_hf[key], t_grads[key]) <= 1e-4, (step, key, _rel(j_hf[key], t_grads[key]))
            assert _rel(after[key], p.detach().numpy()) <= 1e-5, (step, key)
        # Start the next step from identical parameters (the Adam moments stay each side's
        # own): otherwise float32 rounding compounds through Adam, whose update is ~lr per
        # element however small the gradient, and later steps compare drifted models.
        with torch.no_grad():
            for name, p in named.items():
                p.copy_(torch.tensor(after[_hf_name(name)]))

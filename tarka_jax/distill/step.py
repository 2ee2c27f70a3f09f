"""The one jitted distillation step.

The state (:mod:`tarka_jax.train.state`: ``{"step", "params", "opt_state"}``, born
sharded) is donated to the step; the optimizer update and the logged norms are
:func:`tarka_jax.train.step.apply_gradients`', shared with fine-tuning. The teacher's params are an argument of the same step, sharded by the same
rules, never donated and never differentiated.

A batch is ``{"student": {...}, "teacher": {...}}``, each with int32
``input_ids``, ``segment_ids``, ``positions`` ``[B, T]`` (the two tokenizers may
give different T). With a teacher cache the batch is instead
``{"student": {...}, "teacher_embeddings": float32 [B, D_teacher]}`` and the
teacher params are ``{}``: the same step, traced for that input structure. Gradient accumulation splits the global batch into
``accumulation_steps`` micro-batches inside the step (a ``lax.scan``), so one
call is always one optimizer update and the step count, schedule and checkpoint
semantics do not depend on it. Micro-batch ``a`` takes rows ``a, a + A, ...``
so every chip keeps its share of every micro-batch (no resharding); the
in-batch KL term then sees the micro-batch, not the global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tarka_jax.distill.loss import LossConfig, distill_loss
from tarka_jax.nn.config import ModelConfig
from tarka_jax.nn.encoder import embed
from tarka_jax.nn.sharding_rules import RULES
from tarka_jax.train import sharding as shd
from tarka_jax.train.step import apply_gradients, jit_step


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static pieces the step closes over."""

    student: ModelConfig
    teacher: ModelConfig | None  # None: a teacher cache (see teacher_dim)
    loss: LossConfig
    dtype: str = "float32"  # compute dtype of both models; params stay float32
    attention: str | None = None
    remat: bool = False
    accumulation_steps: int = 1
    teacher_dim: int = 0  # the cached teacher's width when ``teacher`` is None


def batch_shardings(mesh: Mesh, cached_teacher: bool = False) -> dict:
    s = shd.batch_sharding(mesh)
    one = {"input_ids": s, "segment_ids": s, "positions": s}
    if cached_teacher:
        return {"student": dict(one), "teacher_embeddings": s}
    return {"student": dict(one), "teacher": dict(one)}


def loss_and_grads(cfg: StepConfig, params, teacher_params, batch):
    """``((loss, terms), grads)`` of one (micro-)batch: the teacher runs without gradient.

    A batch with ``teacher_embeddings`` (a teacher cache) skips the teacher forward.
    """
    if "teacher_embeddings" in batch:
        teacher = batch["teacher_embeddings"].astype(jnp.float32)
    else:
        teacher = embed(teacher_params, batch["teacher"], cfg.teacher, dtype=cfg.dtype,
                        attention=cfg.attention)[:, 0]
    teacher = jax.lax.stop_gradient(teacher)

    def loss_fn(p):
        student = embed(p, batch["student"], cfg.student, dtype=cfg.dtype,
                        attention=cfg.attention, remat=cfg.remat)[:, 0]
        return distill_loss(student, teacher, cfg.loss)

    return jax.value_and_grad(loss_fn, has_aux=True)(params)


def make_train_step(cfg: StepConfig, tx, schedule: Callable, mesh: Mesh,
                    state_sh: dict, teacher_sh, cached_teacher: bool = False) -> Callable:
    """``step(state, teacher_params, batch) -> (state, metrics)``, jitted, state donated.

    ``cached_teacher``: batches carry ``teacher_embeddings`` (teacher_params = ``{}``).
    """
    batch_axes = RULES["batch"]

    def embeddings(params, teacher_params, batch):
        return loss_and_grads(cfg, params, teacher_params, batch)

    def step(state, teacher_params, batch):
        params = state["params"]
        a = cfg.accumulation_steps
        if a == 1:
            (loss, terms), grads = embeddings(params, teacher_params, batch)
        else:
            def split(x):  # [G, T] -> [A, G / A, T]; micro-batch a = rows a, a + A, ...
                x = x.reshape(x.shape[0] // a, a, *x.shape[1:]).swapaxes(0, 1)
                return jax.lax.with_sharding_constraint(
                    x, NamedSharding(mesh, P(None, batch_axes)))

            micro = jax.tree.map(split, batch)

            def body(carry, mb):
                (loss, terms), grads = embeddings(params, teacher_params, mb)
                return jax.tree.map(jnp.add, carry, (loss, terms, grads)), None

            zeros = jax.tree.map(jnp.zeros_like, (jnp.float32(0), _terms_shape(cfg), params))
            (loss, terms, grads), _ = jax.lax.scan(body, zeros, micro)
            loss, terms, grads = jax.tree.map(lambda x: x / a, (loss, terms, grads))
        return apply_gradients(state, grads, loss, tx, schedule, terms)

    return jit_step(step, mesh, state_sh, teacher_sh, batch_shardings(mesh, cached_teacher))


def _terms_shape(cfg: StepConfig) -> dict:
    """Zeros with the keys distill_loss reports, for the accumulation carry."""
    s = jnp.zeros((2, cfg.student.embedding_dim), jnp.float32)
    t_dim = cfg.teacher.embedding_dim if cfg.teacher is not None else cfg.teacher_dim
    t = jnp.zeros((2, t_dim), jnp.float32)
    terms = jax.eval_shape(lambda: distill_loss(s, t, cfg.loss)[1])
    return {k: jnp.zeros((), jnp.float32) for k in terms}

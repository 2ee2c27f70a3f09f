"""Training state and the one jitted distillation step.

State is a plain dict ``{"step": int32 [], "params": tree, "opt_state": tree}``:
it goes straight into optax, orbax and ``NamedSharding``. It is born sharded
(``jax.jit(init, out_shardings=...)``, as big_vision does), and the step donates
it. The teacher's params are an argument of the same step, sharded by the same
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
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tarka_jax.config import ModelConfig
from tarka_jax.distill import sharding as shd
from tarka_jax.distill.loss import LossConfig, distill_loss
from tarka_jax.model import embed


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


def init_state(params, tx) -> dict:
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def abstract_state(params_shape, tx) -> dict:
    """The train state's ShapeDtypeStructs (no memory): the one builder create, resume and
    export use, so the three agree on its structure by construction."""
    params_shape = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32),
                                params_shape)
    return jax.eval_shape(lambda p: init_state(p, tx), params_shape)


def state_shardings(params_shape, tx, mesh: Mesh) -> dict:
    """Shardings of the whole state, derived from the optimizer's own structure.

    ``optax.tree_map_params`` visits exactly the optimizer-state subtrees that
    mirror the params (Adam's ``mu``/``nu``, ...) and hands each leaf its
    parameter's sharding; every other optimizer leaf (counts, schedule state)
    is replicated. Nothing is matched by name or shape.
    """
    state = abstract_state(params_shape, tx)
    p_sh = shd.param_shardings(state["params"], mesh)
    # A frozen parameter (optimizer.freeze) has an empty ``MaskedNode`` where the others
    # have moments: it stays one (nothing to shard).
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    o_sh = optax.tree_map_params(tx, lambda x, sharding: x if masked(x) else sharding,
                                 state["opt_state"], p_sh, is_leaf=masked,
                                 transform_non_params=lambda _: shd.replicated(mesh))
    return {"step": shd.replicated(mesh), "params": p_sh, "opt_state": o_sh}


def create_state(params, tx, mesh: Mesh):
    """(state born sharded, its shardings). ``params``: host (numpy) or device arrays."""
    shardings = state_shardings(params, tx, mesh)
    init = jax.jit(lambda p: init_state(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), p),
                                        tx),
                   out_shardings=shardings)
    return init(params), shardings


def abstract_sharded_state(params_shape, tx, mesh: Mesh) -> tuple[dict, dict]:
    """(abstract state carrying its shardings, the shardings): what a resume restores into."""
    shardings = state_shardings(params_shape, tx, mesh)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            abstract_state(params_shape, tx), shardings)
    return abstract, shardings


def shard_params(params, mesh: Mesh):
    """Teacher params placed by the same rules (float32, read-only)."""
    shardings = shd.param_shardings(params, mesh)
    return jax.device_put(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params),
                          shardings), shardings


def batch_shardings(mesh: Mesh, cached_teacher: bool = False) -> dict:
    s = shd.batch_sharding(mesh)
    one = {"input_ids": s, "segment_ids": s, "positions": s}
    if cached_teacher:
        return {"student": dict(one), "teacher_embeddings": s}
    return {"student": dict(one), "teacher": dict(one)}


def _tree_norm(tree) -> jax.Array:
    return optax.tree.norm(tree)


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
    batch_axes = shd.RULES["batch"]

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
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        metrics = {
            "loss": loss,
            **terms,
            "grad_norm": _tree_norm(grads),
            "update_norm": _tree_norm(updates),
            "param_norm": _tree_norm(new_params),
            "lr": jnp.asarray(schedule(state["step"]), jnp.float32),
        }
        new_state = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}
        return new_state, metrics

    return jax.jit(
        step,
        in_shardings=(state_sh, teacher_sh, batch_shardings(mesh, cached_teacher)),
        out_shardings=(state_sh, shd.replicated(mesh)),
        donate_argnums=(0,),
    )


def _terms_shape(cfg: StepConfig) -> dict:
    """Zeros with the keys distill_loss reports, for the accumulation carry."""
    s = jnp.zeros((2, cfg.student.embedding_dim), jnp.float32)
    t_dim = cfg.teacher.embedding_dim if cfg.teacher is not None else cfg.teacher_dim
    t = jnp.zeros((2, t_dim), jnp.float32)
    terms = jax.eval_shape(lambda: distill_loss(s, t, cfg.loss)[1])
    return {k: jnp.zeros((), jnp.float32) for k in terms}


def make_embed_fn(config: ModelConfig, dtype: str, attention: Any, mesh: Mesh, param_sh):
    """Jitted ``(params, batch) -> [B, dim]`` for evaluation (one segment per row)."""
    s = shd.batch_sharding(mesh)
    return jax.jit(
        lambda p, b: embed(p, b, config, dtype=dtype, attention=attention)[:, 0],
        in_shardings=(param_sh, {"input_ids": s, "segment_ids": s, "positions": s}),
        out_shardings=shd.replicated(mesh),
    )

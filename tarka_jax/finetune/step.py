"""The one jitted contrastive fine-tuning step, on the training core's sharded state.

State, its shardings and its birth come from :mod:`tarka_jax.train.state`
(``{"step", "params", "opt_state"}``, born sharded, donated to the step); the
optimizer is :func:`tarka_jax.train.optim.make_optimizer` and the update with its
logged norms :func:`tarka_jax.train.step.apply_gradients`, shared with distillation. A batch is a list of
token columns ``[anchor, positive, negative...]``, each a dict of int32
``input_ids``, ``segment_ids``, ``positions`` ``[B, T_c]`` whose rows are split
over every chip (the mesh's data and fsdp axes). The loss sees the global batch
(:mod:`tarka_jax.finetune.loss`): every anchor is ranked against the candidates
of all chips.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tarka_jax.finetune.loss import ContrastiveLossConfig, loss_and_grads
from tarka_jax.nn.config import ModelConfig
from tarka_jax.nn.encoder import embed
from tarka_jax.nn.sharding_rules import RULES
from tarka_jax.train import sharding as shd
from tarka_jax.train.step import apply_gradients, jit_step


@dataclasses.dataclass(frozen=True)
class FinetuneStepConfig:
    """Static pieces the step closes over."""

    model: ModelConfig
    loss: ContrastiveLossConfig
    dtype: str = "float32"  # compute dtype; params stay float32
    attention: str | None = None
    remat: bool = False


def embed_fn(cfg: FinetuneStepConfig) -> Callable:
    """``(params, tokens) -> [B, dim]`` float32 sentence embeddings (one text per row)."""
    def fn(params, tokens):
        return embed(params, tokens, cfg.model, dtype=cfg.dtype, attention=cfg.attention,
                     remat=cfg.remat)[:, 0]

    return fn


def column_shardings(mesh: Mesh, num_columns: int) -> list[dict]:
    s = shd.batch_sharding(mesh)
    return [{"input_ids": s, "segment_ids": s, "positions": s} for _ in range(num_columns)]


def contrastive_grads(cfg: FinetuneStepConfig, params, columns, mesh: Mesh | None = None):
    """``(loss, grads)`` of one global batch; with ``mesh``, mini-batch stacks stay sharded."""
    constrain = None
    if mesh is not None:
        stacked = NamedSharding(mesh, P(None, RULES["batch"]))

        def constrain(x):
            return jax.lax.with_sharding_constraint(x, stacked)

    return loss_and_grads(embed_fn(cfg), params, columns, cfg.loss, constrain)


def make_finetune_step(cfg: FinetuneStepConfig, tx, schedule: Callable, mesh: Mesh,
                       state_sh: dict, num_columns: int) -> Callable:
    """``step(state, columns) -> (state, metrics)``, jitted, state donated."""

    def step(state, columns):
        loss, grads = contrastive_grads(cfg, state["params"], columns, mesh)
        return apply_gradients(state, grads, loss, tx, schedule)

    return jit_step(step, mesh, state_sh, column_shardings(mesh, num_columns))

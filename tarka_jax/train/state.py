"""The train state every loop shares: structure, shardings, birth and an evaluation forward.

State is a plain dict ``{"step": int32 [], "params": tree, "opt_state": tree}``: it goes
straight into optax, orbax and ``NamedSharding``. It is born sharded
(``jax.jit(init, out_shardings=...)``, as big_vision does) and each step donates it.
:func:`abstract_state` is the one builder that create, resume and export use, so the three
agree on its structure by construction.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from tarka_jax.nn.config import ModelConfig
from tarka_jax.nn.encoder import embed
from tarka_jax.nn.sharding_rules import param_shardings
from tarka_jax.train import sharding as shd


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
    p_sh = param_shardings(state["params"], mesh)
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
    shardings = param_shardings(params, mesh)
    return jax.device_put(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params),
                          shardings), shardings


def make_embed_fn(config: ModelConfig, dtype: str, attention: Any, mesh: Mesh, param_sh):
    """Jitted ``(params, batch) -> [B, dim]`` for evaluation (one segment per row)."""
    s = shd.batch_sharding(mesh)
    return jax.jit(
        lambda p, b: embed(p, b, config, dtype=dtype, attention=attention)[:, 0],
        in_shardings=(param_sh, {"input_ids": s, "segment_ids": s, "positions": s}),
        out_shardings=shd.replicated(mesh),
    )

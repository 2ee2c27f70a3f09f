"""What every loop's step does after its loss: the optimizer update, the metrics, the jit.

A loop's step computes ``(loss, grads)`` (plus its own loss terms) its way; the rest is
here, once: :func:`apply_gradients` (optax update, new state, the logged norms and learning
rate) and :func:`jit_step` (state donated, sharded in and out as the state's shardings say,
metrics replicated).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from tarka_jax.train import sharding as shd


def apply_gradients(state: dict, grads, loss, tx, schedule: Callable,
                    terms: dict | None = None) -> tuple[dict, dict]:
    """``(new state, metrics)``: one optax update of ``state["params"]`` by ``grads``.

    Metrics: ``loss``, the loop's own ``terms``, ``grad_norm``, ``update_norm``,
    ``param_norm`` (global L2 norms) and ``lr`` (the schedule at this step).
    """
    params = state["params"]
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    metrics = {
        "loss": loss,
        **(terms or {}),
        "grad_norm": optax.tree.norm(grads),
        "update_norm": optax.tree.norm(updates),
        "param_norm": optax.tree.norm(new_params),
        "lr": jnp.asarray(schedule(state["step"]), jnp.float32),
    }
    return {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}, metrics


def jit_step(step: Callable, mesh: Mesh, state_sh: dict, *arg_shardings) -> Callable:
    """``step(state, *args) -> (state, metrics)`` jitted: the state donated and kept in
    ``state_sh``, each further argument in its sharding, the metrics replicated."""
    return jax.jit(step, in_shardings=(state_sh, *arg_shardings),
                   out_shardings=(state_sh, shd.replicated(mesh)), donate_argnums=(0,))

"""Read any saved step of a run folder back as a model (what ``flax_to_hf --step`` uses)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from tarka_jax.checkpoint import SentenceTransformerMeta
from tarka_jax.config import ModelConfig
from tarka_jax.distill import checkpointing as ckpt


def load_run_step(run_dir: str, step: int | None = None):
    """``(config, params, meta, tokenizer_folder)`` of a run's checkpoint ``step``.

    Args:
      run_dir: a ``tarka-jax distill --workdir`` folder.
      step: a saved step; None = the latest.

    Returns:
      the student's ModelConfig, its float32 numpy param tree, its
      sentence-transformers metadata, and the folder holding its tokenizer files.
    """
    from tarka_jax.distill.optim import OptimizerConfig, make_optimizer
    from tarka_jax.model import init_params

    run = ckpt.read_run_file(run_dir)
    config = ModelConfig.from_dict(run["student"])
    # The optimizer state's structure is needed to read the checkpoint (orbax
    # restores whole items); only the params are kept.
    tx, _ = make_optimizer(OptimizerConfig(**run["config"]["optimizer"]),
                           run["config"]["train"]["steps"])
    device = jax.devices("cpu")[0] if _has_cpu() else jax.devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    params_shape = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    state_shape = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params_shape,
                   "opt_state": jax.eval_shape(tx.init, params_shape)}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                            state_shape)
    mngr = ckpt.manager(run_dir, read_only=True)
    try:
        state, _ = ckpt.restore(mngr, step, abstract)
    finally:
        mngr.close()
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), state["params"])
    folder = os.path.join(run_dir, ckpt.STUDENT_DIR)
    return config, params, SentenceTransformerMeta.from_folder(folder), folder


def _has_cpu() -> bool:
    try:
        return bool(jax.devices("cpu"))
    except RuntimeError:
        return False


"""Read any saved step of a run folder back as a model.

New run folders keep each step's params as their own orbax item, which
:func:`tarka_jax.convert.run_folder.load_run_params` reads with no training code
(``python convert/flax_to_hf.py RUN OUT --step N`` goes that way). This module
also reads folders written before that item existed, by restoring the whole
train state: that needs the optimizer's state structure, hence training imports.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from tarka_jax.convert.run_folder import (
    STUDENT_DIR,
    RunFolderError,
    cpu_sharding,
    load_run_params,
    read_run_file,
    run_model,
)
from tarka_jax.convert.st_folder import SentenceTransformerMeta
from tarka_jax.nn.config import ModelConfig
from tarka_jax.train import checkpointing as ckpt


def load_run_step(run_dir: str, step: int | None = None):
    """``(config, params, meta, tokenizer_folder)`` of a run's checkpoint ``step``.

    Args:
      run_dir: a ``tarka-jax distill`` / ``finetune --workdir`` folder.
      step: a saved step; None = the latest.

    Returns:
      the student's ModelConfig, its float32 numpy param tree, its
      sentence-transformers metadata, and the folder holding its tokenizer files.
    """
    try:
        config, params, meta, folder, _ = load_run_params(run_dir, step)
        return config, params, meta, folder
    except RunFolderError as e:
        if "no 'params' item" not in str(e):
            raise
    return _load_from_train_state(run_dir, step)


def _load_from_train_state(run_dir: str, step: int | None):
    from tarka_jax.nn.encoder import init_params
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer
    from tarka_jax.train.state import abstract_state

    run = read_run_file(run_dir)
    config = ModelConfig.from_dict(run_model(run))
    tx, _ = make_optimizer(OptimizerConfig(**run["config"]["optimizer"]),
                           run["config"]["train"]["steps"])
    params_shape = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    sharding = cpu_sharding()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                            abstract_state(params_shape, tx))
    mngr = ckpt.manager(run_dir, read_only=True)
    try:
        state, _ = ckpt.restore(mngr, step, abstract)
    finally:
        mngr.close()
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), state["params"])
    folder = os.path.join(run_dir, STUDENT_DIR)
    return config, params, SentenceTransformerMeta.from_folder(folder), folder

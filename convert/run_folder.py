"""Reading a model out of a distillation run folder, with no training code.

Layout of a run folder (``tarka-jax distill --workdir``; written by
:mod:`tarka_jax.train.checkpointing`)::

    run.json            format tag, the resolved distill config, student + teacher ModelConfig
    student/            the student's tokenizer files and sentence-transformers metadata
    checkpoints/<step>/ orbax items: "state" ({step, params, opt_state}), "data" (iterator
                        position) and "params" (the bare student params, readable alone)

Each step stores the params a second time as their own item so that exporting a
step needs only the student's config (to build the abstract tree), never the
optimizer that made ``opt_state``.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

from tarka_jax.convert.st_folder import SentenceTransformerMeta
from tarka_jax.errors import TarkaError
from tarka_jax.files.jsonfiles import read_json
from tarka_jax.nn.config import ModelConfig

RUN_FORMAT = "tarka-jax-distill-run"
RUN_VERSION = 1
RUN_FILE = "run.json"
STUDENT_DIR = "student"
CHECKPOINT_DIR = "checkpoints"
ITEMS = ("state", "data", "params")


class RunFolderError(TarkaError):
    """A run folder that does not hold what is asked of it."""


def is_run_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, RUN_FILE))


def read_run_file(workdir: str) -> dict:
    path = os.path.join(workdir, RUN_FILE)
    if not os.path.isfile(path):
        raise RunFolderError(f"{workdir} is not a distillation run folder (no {RUN_FILE})")
    run = read_json(path)
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
        raise RunFolderError(f"{path} is not a {RUN_FORMAT} file")
    return run


def checkpoint_manager(workdir: str, *, read_only: bool = True, keep: int = 3,
                       async_save: bool = True):
    """The orbax manager of ``workdir/checkpoints`` (read-only unless asked)."""
    import orbax.checkpoint as ocp

    if read_only:  # orbax warns about save options on a read-only manager
        _quiet_read_only_notice()
        options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                               save_interval_steps=0, max_to_keep=None,
                                               enable_async_checkpointing=False)
    else:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                               enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
                                 options=options, item_names=ITEMS)


class _ReadOnlyNotice(logging.Filter):
    """Drops orbax's "Given directory is read only" warning: reading is all an export asks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "directory is read only" not in record.getMessage()


def _quiet_read_only_notice() -> None:
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _ReadOnlyNotice) for f in logger.filters):
        logger.addFilter(_ReadOnlyNotice())


def check_step(mngr, step: int | None) -> int:
    """``step`` if saved (None = the latest); a RunFolderError listing the saved steps if not."""
    if step is None:
        step = mngr.latest_step()
        if step is None:
            raise RunFolderError(f"no checkpoint in {mngr.directory}")
    if step not in mngr.all_steps():
        raise RunFolderError(f"no checkpoint for step {step} in {mngr.directory}; saved steps: "
                             f"{sorted(mngr.all_steps())}")
    return step


def cpu_sharding():
    """Where exported params are placed: the CPU when jax has one, else the first device."""
    try:
        device = jax.devices("cpu")[0]
    except RuntimeError:
        device = jax.devices()[0]
    return jax.sharding.SingleDeviceSharding(device)


def load_run_params(run_dir: str, step: int | None = None):
    """``(config, float32 numpy params, meta, tokenizer folder, step)`` of a run's step."""
    import orbax.checkpoint as ocp

    from tarka_jax.nn.encoder import init_params

    run = read_run_file(run_dir)
    config = ModelConfig.from_dict(run["student"])
    sharding = cpu_sharding()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                            jax.eval_shape(lambda: init_params(config, jax.random.key(0))))
    mngr = checkpoint_manager(run_dir)
    try:
        step = check_step(mngr, step)
        if not os.path.isdir(os.path.join(str(mngr.directory), str(step), "params")):
            raise RunFolderError(
                f"step {step} of {run_dir} has no 'params' item (written by an older tarka-jax); "
                "read it with tarka_jax.distill.export.load_run_step")
        out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
    finally:
        mngr.close()
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), out["params"])
    folder = os.path.join(run_dir, STUDENT_DIR)
    return config, params, SentenceTransformerMeta.from_folder(folder), folder, step

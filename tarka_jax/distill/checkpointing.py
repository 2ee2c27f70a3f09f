"""The run folder: orbax checkpoints of state + data position, plus what export needs.

Layout of ``--workdir``::

    run.json            format tag, the resolved distill config, student + teacher ModelConfig
    config.toml         the TOML the run started from (for people)
    student/            the student's tokenizer files and sentence-transformers metadata
    checkpoints/<step>/ orbax: "state" ({step, params, opt_state}) and "data" (iterator position)
    metrics.jsonl       one JSON object per logged step
    tensorboard/        when logging.tensorboard is on

orbax's ``CheckpointManager`` writes each step atomically (a temporary folder
renamed when complete), asynchronously when ``checkpoint.async_save``, and keeps
the newest ``checkpoint.keep``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import jax
import orbax.checkpoint as ocp

from tarka_jax.checkpoint import SentenceTransformerMeta, copy_tokenizer_files
from tarka_jax.config import ModelConfig

RUN_FORMAT = "tarka-jax-distill-run"
RUN_VERSION = 1
RUN_FILE = "run.json"
STUDENT_DIR = "student"
CHECKPOINT_DIR = "checkpoints"


class RunFolderError(ValueError):
    """A run folder that does not hold what is asked of it."""


def write_run_files(workdir: str, *, config_dict: dict, config_text: str | None,
                    student: ModelConfig, teacher: ModelConfig,
                    student_meta: SentenceTransformerMeta, student_tokenizer_folder: str) -> None:
    """Everything except checkpoints; rewritten on each start (same content on resume)."""
    os.makedirs(workdir, exist_ok=True)
    run = {"format": RUN_FORMAT, "version": RUN_VERSION, "config": config_dict,
           "student": student.to_dict(), "teacher": teacher.to_dict()}
    tmp = os.path.join(workdir, RUN_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(run, f, indent=2)
    os.replace(tmp, os.path.join(workdir, RUN_FILE))
    if config_text is not None:
        with open(os.path.join(workdir, "config.toml"), "w", encoding="utf-8") as f:
            f.write(config_text)
    student_dir = os.path.join(workdir, STUDENT_DIR)
    os.makedirs(student_dir, exist_ok=True)
    copy_tokenizer_files(student_tokenizer_folder, student_dir)
    student_meta.write(student_dir)


def read_run_file(workdir: str) -> dict:
    path = os.path.join(workdir, RUN_FILE)
    if not os.path.isfile(path):
        raise RunFolderError(f"{workdir} is not a distillation run folder (no {RUN_FILE})")
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    if run.get("format") != RUN_FORMAT:
        raise RunFolderError(f"{path} is not a {RUN_FORMAT} file")
    return run


def clear_run(workdir: str) -> None:
    """Remove a previous run's checkpoints and metrics (a fresh start in an old folder)."""
    for name in (CHECKPOINT_DIR, "metrics.jsonl", "tensorboard"):
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def manager(workdir: str, *, keep: int = 3, async_save: bool = True,
            read_only: bool = False) -> ocp.CheckpointManager:
    if read_only:  # orbax warns about save options on a read-only manager
        _quiet_read_only_notice()
        options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                               save_interval_steps=0, max_to_keep=None,
                                               enable_async_checkpointing=False)
    else:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                               enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
                                 options=options, item_names=("state", "data"))


class _ReadOnlyNotice(logging.Filter):
    """Drops orbax's "Given directory is read only" warning: reading is all an export asks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "directory is read only" not in record.getMessage()


def _quiet_read_only_notice() -> None:
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _ReadOnlyNotice) for f in logger.filters):
        logger.addFilter(_ReadOnlyNotice())


def save(mngr: ocp.CheckpointManager, step: int, state, data_position: dict) -> None:
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            data=ocp.args.JsonSave(data_position)),
              force=True)


def abstract_like(tree, shardings):
    """ShapeDtypeStructs carrying the shardings a restored tree should have."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def restore(mngr: ocp.CheckpointManager, step: int | None, abstract_state):
    """(state placed as ``abstract_state`` says, data position) of ``step`` (None = latest)."""
    if step is None:
        step = mngr.latest_step()
        if step is None:
            raise RunFolderError(f"no checkpoint in {mngr.directory} to resume from")
    if step not in mngr.all_steps():
        raise RunFolderError(f"no checkpoint for step {step} in {mngr.directory}; saved steps: "
                             f"{sorted(mngr.all_steps())}")
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

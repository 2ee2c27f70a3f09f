"""The run folder: orbax checkpoints of state + data position, plus what export needs.

Layout of ``--workdir``::

    run.json            format tag, the resolved distill config, student + teacher ModelConfig
    config.toml         the TOML the run started from (for people)
    student/            the student's tokenizer files and sentence-transformers metadata
    checkpoints/<step>/ orbax: "state" ({step, params, opt_state}), "data" (iterator position)
                        and "params" (the bare params: what export reads, no optimizer needed)
    metrics.jsonl       one JSON object per logged step
    tensorboard/        when logging.tensorboard is on

orbax's ``CheckpointManager`` writes each step atomically (a temporary folder
renamed when complete), asynchronously when ``checkpoint.async_save``, and keeps
the newest ``checkpoint.keep``.
"""

from __future__ import annotations

import os
import shutil

import orbax.checkpoint as ocp

from tarka_jax.convert.run_folder import (  # noqa: F401
    CHECKPOINT_DIR,
    RUN_FILE,
    RUN_FORMAT,
    RUN_VERSION,
    STUDENT_DIR,
    RunFolderError,
    check_step,
    checkpoint_manager,
    read_run_file,
)
from tarka_jax.convert.st_folder import SentenceTransformerMeta, copy_tokenizer_files
from tarka_jax.files.jsonfiles import write_json
from tarka_jax.nn.config import ModelConfig


def write_run_files(workdir: str, *, config_dict: dict, config_text: str | None,
                    student: ModelConfig, teacher: ModelConfig,
                    student_meta: SentenceTransformerMeta, student_tokenizer_folder: str) -> None:
    """Everything except checkpoints; rewritten on each start (same content on resume)."""
    os.makedirs(workdir, exist_ok=True)
    run = {"format": RUN_FORMAT, "version": RUN_VERSION, "config": config_dict,
           "student": student.to_dict(), "teacher": teacher.to_dict()}
    write_json(os.path.join(workdir, RUN_FILE), run, atomic=True)
    if config_text is not None:
        with open(os.path.join(workdir, "config.toml"), "w", encoding="utf-8") as f:
            f.write(config_text)
    student_dir = os.path.join(workdir, STUDENT_DIR)
    os.makedirs(student_dir, exist_ok=True)
    copy_tokenizer_files(student_tokenizer_folder, student_dir)
    student_meta.write(student_dir)


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
    return checkpoint_manager(workdir, read_only=read_only, keep=keep, async_save=async_save)


def save(mngr: ocp.CheckpointManager, step: int, state, data_position: dict) -> None:
    """Save ``state``, the data position and (again, as its own item) the bare params."""
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            data=ocp.args.JsonSave(data_position),
                                            params=ocp.args.StandardSave(state["params"])),
              force=True)


def restore(mngr: ocp.CheckpointManager, step: int | None, abstract_state):
    """(state placed as ``abstract_state`` says, data position) of ``step`` (None = latest)."""
    step = check_step(mngr, step)
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

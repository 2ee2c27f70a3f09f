"""The run folder's own files, and the one place a run takes its folder for writing.

Layout of ``--workdir`` (both loops)::

    run.json              the marker: what run this is (below); written first, validated always
    config.toml           the TOML the run started from (for people)
    student/              the trained model's tokenizer files and sentence-transformers metadata
    checkpoints/<step>/   orbax: state, data position, bare params (tarka_jax.train.checkpointing)
    metrics.jsonl         one JSON object per logged step; tensorboard/ when asked
    config_changes.jsonl  what --resume --allow-config-change accepted
    replaced-<id>/        an earlier run's files, set aside by a fresh start (never deleted)

``run.json`` (format ``tarka-jax-run``, version 2): ``run_id`` (32 hex digits), ``loop``
(``distill`` | ``finetune``), ``created``, ``config`` (the resolved config), ``model`` (the
trained model's ModelConfig: what export builds), ``sources`` (where the trained model and
the loop's other models came from) and ``inputs`` (size + SHA-256 of every file trained
from: :mod:`tarka_jax.train.fingerprint`). :func:`tarka_jax.convert.run_folder.validate_run`
checks every field; version-1 distillation run files still read.

Ownership: a folder is a run's to write when it is new, empty, or holds a run.json that
validates. Another tool's run.json, or a malformed one, is not ours: refused, naming the
file; so is a non-empty folder without one. A fresh start in an old run folder of ours
deletes nothing: the names the earlier run wrote move into ``replaced-<its run id>/`` (its
run.json is copied there, then replaced), and every other file is left alone.
"""

from __future__ import annotations

import datetime
import os
import shutil
import uuid

from tarka_jax.convert.run_folder import (
    CHECKPOINT_DIR,
    RUN_FILE,
    RUN_FORMAT,
    RUN_VERSION,
    STUDENT_DIR,
    RunFolderError,
    read_run_file,
)
from tarka_jax.convert.st_folder import copy_tokenizer_files
from tarka_jax.files.jsonfiles import write_json
from tarka_jax.files.marker import LOCK
from tarka_jax.train.resume_check import CHANGES_FILE

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
REPLACED_PREFIX = "replaced-"
# Everything a run writes at the top of its folder; a fresh start sets these aside.
RUN_NAMES = (RUN_FILE, CONFIG_FILE, STUDENT_DIR, CHECKPOINT_DIR, METRICS_FILE, TENSORBOARD_DIR,
             CHANGES_FILE)


class RunFolderExistsError(RunFolderError, FileExistsError):
    """A fresh run refused a folder that is not a run folder (still a FileExistsError)."""


def claim_run_folder(workdir: str, *, resume: bool, loop: str) -> dict | None:
    """Take ``workdir`` for this job's writing: the validated run.json it holds (None for a
    new or empty folder), or a refusal naming what is not ours. Every process calls it.

    The job lock (one writer job per folder; :func:`tarka_jax.runtime.job_folder.hold`) is
    already held when this runs: ``train.loop.run`` takes it first and keeps it to the end.
    """
    path = os.path.join(workdir, RUN_FILE)
    if os.path.lexists(path):
        run = read_run_file(workdir)  # validated: a foreign or malformed run.json raises
        if resume and run_loop(run) != loop:
            raise RunFolderError(f"{path} is a {run_loop(run)} run; resume it with "
                                 f"`tarka-jax {run_loop(run)}`")
        return run
    if resume:
        raise RunFolderError(f"--resume: {workdir} is not a run folder (no {RUN_FILE})")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise RunFolderExistsError(f"--workdir {workdir} is a file, not a folder")
    if os.path.isdir(workdir) and set(os.listdir(workdir)) - {LOCK}:  # the job's own lock
        raise RunFolderExistsError(f"--workdir {workdir} is not empty and is not a run folder "
                                   f"(no {RUN_FILE}); choose a new or empty folder")
    return None


def run_loop(run: dict) -> str:
    """Which loop wrote a validated run file (version 1 marked fine-tuning in ``teacher``)."""
    if run["format"] == RUN_FORMAT:
        return run["loop"]
    return "finetune" if "finetune" in run["teacher"] else "distill"


def new_run(loop: str, *, config: dict, model: dict, sources: dict, inputs: dict) -> dict:
    """A version-2 run.json for a fresh start (a new run id)."""
    return {"format": RUN_FORMAT, "version": RUN_VERSION, "run_id": uuid.uuid4().hex,
            "loop": loop, "created": datetime.datetime.now(datetime.UTC).isoformat(),
            "config": config, "model": model, "sources": sources, "inputs": inputs}


def set_aside(workdir: str, old_run: dict) -> str | None:
    """Move what an earlier run of this folder wrote into ``replaced-<its id>/`` (its run.json
    copied, so the folder stays a run folder until the new one is written); the folder, or
    None when there was nothing but run.json."""
    present = [n for n in RUN_NAMES if n != RUN_FILE and os.path.lexists(os.path.join(workdir, n))]
    stamp = old_run.get("run_id") or datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    target, n = os.path.join(workdir, REPLACED_PREFIX + stamp[:12]), 1
    while os.path.lexists(target):
        n += 1
        target = os.path.join(workdir, f"{REPLACED_PREFIX}{stamp[:12]}-{n}")
    _writing(target, os.makedirs, target)
    _writing(target, shutil.copy2, os.path.join(workdir, RUN_FILE), target)
    for name in present:
        os.rename(os.path.join(workdir, name), os.path.join(target, name))
    return target if present else None


def write_run_files(workdir: str, run: dict, *, config_text: str | None,
                    meta, tokenizer_folder: str) -> None:
    """run.json first (the marker), then config.toml and student/ (tokenizer + ST metadata)."""
    _writing(workdir, os.makedirs, workdir, exist_ok=True)
    path = os.path.join(workdir, RUN_FILE)
    _writing(path, write_json, path, run, atomic=True)
    if config_text is not None:
        path = os.path.join(workdir, CONFIG_FILE)
        _writing(path, _write_text, path, config_text)
    student_dir = os.path.join(workdir, STUDENT_DIR)
    _writing(student_dir, os.makedirs, student_dir, exist_ok=True)
    _writing(student_dir, copy_tokenizer_files, tokenizer_folder, student_dir)
    _writing(student_dir, meta.write, student_dir)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _writing(path: str, fn, *args, **kwargs):
    """``fn(*args)``; an OSError (a full disk, a read-only folder) becomes one line naming
    ``path``."""
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        raise RunFolderError(f"writing {path}: {e.strerror or e}") from None

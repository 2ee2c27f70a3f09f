"""A run folder's checkpoints: orbax saves of state + data position, and an honest restore.

Each ``checkpoints/<step>/`` holds three orbax items: ``state`` ({step, params, opt_state}),
``data`` (the batch iterator's position) and ``params`` (the bare params again, what export
reads with no optimizer). orbax's ``CheckpointManager`` writes each step atomically (a
temporary folder renamed when complete), asynchronously when ``checkpoint.async_save``, and
keeps the newest ``checkpoint.keep``.

Failures are one line that names the step and the path (and only that: orbax logs a failed
save's traceback from each of its threads, and TensorStore prints the spec of every array
of a failed read from C++ callbacks and abandoned coroutines, and a write finishing after a
failed save's event loop closed prints ``Event loop is closed``; that noise is held back
unless ``TARKA_JAX_DEBUG=1``):

* a save that fails (a full disk above all) says so with the folder it was writing, not
  orbax's or TensorStore's dump (:class:`CheckpointSaveError`);
* a restore of a step that cannot be read (a file cut short, corrupt metadata) names the
  step and the first line of the reason, moves the step aside to
  ``checkpoints/unreadable-<step>[-N]/`` (kept for a look, never deleted: orbax would refuse
  to save that step again over it) and falls back to the newest step that reads, saying so
  (:func:`restore_intact`). Every process agrees on the step.

The run folder's other files (run.json, student/, metrics) are :mod:`tarka_jax.train.run_files`'.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

import orbax.checkpoint as ocp

from tarka_jax.convert.run_folder import (  # noqa: F401 (the run folder's names, here too)
    CHECKPOINT_DIR,
    RUN_FILE,
    STUDENT_DIR,
    RunFolderError,
    check_step,
    checkpoint_manager,
    held_stderr,
    reason,
)
from tarka_jax.runtime.distributed import any_process, barrier, is_main_process

UNREADABLE_PREFIX = "unreadable-"


class CheckpointSaveError(RunFolderError):
    """A checkpoint that could not be written (the message names the step and folder)."""


class CheckpointRestoreError(RunFolderError):
    """No saved step of a run could be read back."""


class _SaveThreadErrors(logging.Filter):
    """Drops the tracebacks orbax logs from its save threads: :func:`save` / :func:`wait`
    raise the same failure as one line (``TARKA_JAX_DEBUG=1`` keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.exc_info
                    and "orbax" in record.pathname and not os.environ.get("TARKA_JAX_DEBUG"))


def manager(workdir: str, *, keep: int = 3, async_save: bool = True,
            read_only: bool = False) -> ocp.CheckpointManager:
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _SaveThreadErrors) for f in logger.filters):
        logger.addFilter(_SaveThreadErrors())
    return checkpoint_manager(workdir, read_only=read_only, keep=keep, async_save=async_save)


def saved_steps(workdir: str) -> list[int]:
    """The complete steps under ``workdir/checkpoints`` (a read-only look; creates nothing)."""
    mngr = checkpoint_manager(workdir, read_only=True)
    try:
        return sorted(mngr.all_steps())
    finally:
        mngr.close()


def _disk_full(e: BaseException) -> bool:
    while e is not None:
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _save_error(e: Exception, where: str) -> CheckpointSaveError:
    if _disk_full(e):
        return CheckpointSaveError(f"{where}: disk full (no space left on device); free space, "
                                   "then --resume from the last complete step")
    return CheckpointSaveError(f"{where} failed: {reason(e)}")


def _named_failure(call, where: str) -> None:
    """Run an orbax save call with fd 2 held: a failure is raised as one line naming
    ``where``, and what orbax's threads print about it is dropped once it has settled (a
    TensorStore write that finishes even later is dropped by the manager's hook:
    ``run_folder._quiet_late_callbacks``); a save that works shows everything it printed."""
    error, held, failed = None, [], []
    with held_stderr(held, failed):
        try:
            call()
        except Exception as e:  # orbax / TensorStore / the OS: named below
            error = e
            failed.append(where)
    if error is None or os.environ.get("TARKA_JAX_DEBUG"):
        os.write(2, held[0])
    if error is not None:
        raise _save_error(error, where) from None


def save(mngr: ocp.CheckpointManager, step: int, state, data_position: dict) -> None:
    """Save ``state``, the data position and (again, as its own item) the bare params.
    An async save's failure may surface here, at the next save."""
    _named_failure(lambda: mngr.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      data=ocp.args.JsonSave(data_position),
                                      params=ocp.args.StandardSave(state["params"])),
        force=True), f"saving checkpoint step {step} to {mngr.directory}")


def wait(mngr: ocp.CheckpointManager) -> None:
    """Wait for an async save to land; its failure named as :func:`save` names one."""
    _named_failure(mngr.wait_until_finished, f"saving a checkpoint to {mngr.directory}")


def restore(mngr: ocp.CheckpointManager, step: int | None, abstract_state):
    """(state placed as ``abstract_state`` says, data position) of ``step`` (None = latest)."""
    step = check_step(mngr, step)
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out["state"], out["data"]


def _set_aside(directory: str, step: int) -> str:
    """Move ``directory/<step>`` to ``directory/unreadable-<step>[-N]``; the new path."""
    base = os.path.join(directory, f"{UNREADABLE_PREFIX}{step}")
    target, n = base, 1
    while os.path.lexists(target):
        n += 1
        target = f"{base}-{n}"
    os.rename(os.path.join(directory, str(step)), target)
    return target


def restore_intact(workdir: str, abstract_state, *, keep: int, async_save: bool, log=None):
    """``(manager, state, data position, step)`` of the newest step that reads back.

    An unreadable step is named (``log``, one line each: stderr by default), moved aside
    and the next older one tried; the manager returned no longer lists it.

    Raises:
      CheckpointRestoreError: no step reads (each one's reason named).
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    failures: list[str] = []
    while True:
        mngr = manager(workdir, keep=keep, async_save=async_save)
        step = mngr.latest_step()
        if step is None:
            mngr.close()
            what = "; ".join(failures) or "none saved"
            raise CheckpointRestoreError(f"--resume: no readable checkpoint in "
                                         f"{os.path.join(workdir, CHECKPOINT_DIR)} ({what})")
        error, held, failed = None, [], []
        with held_stderr(held, failed):
            try:
                state, position = restore(mngr, step, abstract_state)
            except Exception as e:  # corrupt or cut-short files: TensorStore, JSON, orbax
                error = e
                failed.append(step)
        if error is None or os.environ.get("TARKA_JAX_DEBUG"):
            os.write(2, held[0])  # nothing of a good restore is hidden
        if not any_process(error is not None):
            if failures:
                log(f"tarka-jax: resuming from step {step}, the newest readable checkpoint")
            return mngr, state, position, step
        mngr.close()
        why = reason(error) if error is not None else "unreadable on another process"
        failures.append(f"step {step}: {why}")
        if is_main_process():
            moved = _set_aside(os.path.join(workdir, CHECKPOINT_DIR), step)
            log(f"tarka-jax: checkpoint step {step} in {workdir} is unreadable ({why}); "
                f"moved to {moved}")
        barrier(f"tarka-jax: unreadable step {step} set aside")

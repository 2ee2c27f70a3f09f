"""Reading a model out of a training run folder, with no training code.

Layout of a run folder (``tarka-jax distill`` / ``finetune --workdir``; written by
:mod:`tarka_jax.train.run_files` and :mod:`tarka_jax.train.checkpointing`)::

    run.json            the run's marker: format, version, run id, loop, config, the trained
                        model's ModelConfig (``model``), sources, input fingerprints
    student/            the student's tokenizer files and sentence-transformers metadata
    checkpoints/<step>/ orbax items: "state" ({step, params, opt_state}), "data" (iterator
                        position) and "params" (the bare student params, readable alone)

Each step stores the params a second time as their own item so that exporting a
step needs only the student's config (to build the abstract tree), never the
optimizer that made ``opt_state``. A step that cannot be read is one line naming it and
the saved steps (TensorStore's dump of every array spec held back: :func:`held_stderr`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import sys
import tempfile
import time

import jax
import numpy as np

from tarka_jax.convert.st_folder import SentenceTransformerMeta
from tarka_jax.errors import TarkaError
from tarka_jax.files.jsonfiles import read_json
from tarka_jax.nn.config import ModelConfig

RUN_FORMAT = "tarka-jax-run"
RUN_VERSION = 2
LEGACY_FORMAT = "tarka-jax-distill-run"  # version 1: distillation runs before version 2
LOOPS = ("distill", "finetune")
RUN_FILE = "run.json"
STUDENT_DIR = "student"
CHECKPOINT_DIR = "checkpoints"
ITEMS = ("state", "data", "params")


class RunFolderError(TarkaError):
    """A run folder that does not hold what is asked of it."""


def is_run_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, RUN_FILE))


def read_run_file(workdir: str) -> dict:
    """``workdir``'s run.json, validated (:func:`validate_run`)."""
    path = os.path.join(workdir, RUN_FILE)
    if not os.path.isfile(path):
        raise RunFolderError(f"{workdir} is not a training run folder (no {RUN_FILE})")
    try:
        run = read_json(path)
    except TarkaError as e:  # invalid JSON: the reader's message names the file
        raise RunFolderError(f"{e}; not a tarka-jax run file") from None
    return validate_run(run, path)


_V2_FIELDS = {"config": dict, "model": dict, "sources": dict, "inputs": dict, "created": str}
_V1_FIELDS = {"config": dict, "student": dict, "teacher": dict}


def validate_run(run, path: str) -> dict:
    """``run`` if it is a tarka-jax run file (version 2, or a version-1 distillation run);
    a RunFolderError naming ``path`` and the first field at fault if not. Another tool's
    ``run.json`` is not ours, and nothing here trusts one that does not validate."""
    fmt = run.get("format") if isinstance(run, dict) else None
    if fmt not in (RUN_FORMAT, LEGACY_FORMAT):
        raise RunFolderError(f"{path} is not a tarka-jax run file (format {fmt!r}, expected "
                             f"{RUN_FORMAT!r})")
    version = run.get("version")
    want = RUN_VERSION if fmt == RUN_FORMAT else 1
    if type(version) is not int or version != want:
        raise RunFolderError(f"{path}: {fmt} version {version!r} is not one this tarka-jax "
                             f"reads ({want})")
    fields = _V2_FIELDS if fmt == RUN_FORMAT else _V1_FIELDS
    for key, kind in fields.items():
        if not isinstance(run.get(key), kind):
            raise RunFolderError(f"{path}: malformed run file ({key!r} must be a "
                                 f"{'table' if kind is dict else 'string'})")
    if fmt == RUN_FORMAT:
        if not isinstance(run.get("run_id"), str) or not re.fullmatch(r"[0-9a-f]{32}",
                                                                       run["run_id"]):
            raise RunFolderError(f"{path}: malformed run file ('run_id' must be 32 hex digits)")
        if run.get("loop") not in LOOPS:
            raise RunFolderError(f"{path}: malformed run file ('loop' must be one of {LOOPS})")
    return run


def run_model(run: dict) -> dict:
    """The trained model's ModelConfig dict of a validated run file (any version)."""
    return run["model"] if run["format"] == RUN_FORMAT else run["student"]


def checkpoint_manager(workdir: str, *, read_only: bool = True, keep: int = 3,
                       async_save: bool = True):
    """The orbax manager of ``workdir/checkpoints`` (read-only unless asked)."""
    import orbax.checkpoint as ocp

    _quiet_late_callbacks()
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


def _late_callback(unraisable) -> bool:
    """A TensorStore write or read that finished after orbax closed the event loop awaiting it
    (the save or restore already failed, and said so in one line): its done-callback,
    ``loop.call_soon_threadsafe``, raises ``Event loop is closed`` on a TensorStore thread, where
    nothing can catch it. Seen on a loaded machine, seconds after a disk-full save."""
    error, tb = unraisable.exc_value, unraisable.exc_traceback
    return (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
            and tb is not None and tb.tb_frame.f_code.co_name == "call_soon_threadsafe")


def _quiet_late_callbacks() -> None:
    """Drop :func:`_late_callback`'s traceback for the rest of the process (every other
    unraisable error goes to the hook that was there; ``TARKA_JAX_DEBUG=1`` keeps all). A hook,
    not a time window: the callback may come any time after the failure."""
    previous = sys.unraisablehook
    if getattr(previous, "tarka_late_callbacks", False):
        return

    def hook(unraisable):
        if os.environ.get("TARKA_JAX_DEBUG") or not _late_callback(unraisable):
            previous(unraisable)

    hook.tarka_late_callbacks = True
    sys.unraisablehook = hook


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


def reason(e: BaseException, limit: int = 200) -> str:
    """One short line for an exception: its first line, TensorStore's spec dump cut off."""
    text = " ".join(str(e).split("See full TensorStore details")[0].split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def held_stderr(out: list, settle: list):
    """File descriptor 2 into a temporary file while the block runs; what was written is
    appended to ``out``. With ``settle`` non-empty (a read failed), it first waits for the
    abandoned TensorStore reads to finish complaining: until nothing new is written for
    0.2 s (2 s at most), the coroutines they left collected."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            if settle:
                size, quiet, deadline = -1, 0, time.monotonic() + 2
                while quiet < 4 and time.monotonic() < deadline:
                    gc.collect()
                    time.sleep(0.05)
                    now = os.fstat(tmp.fileno()).st_size
                    quiet, size = (quiet + 1, size) if now == size else (0, now)
            gc.collect()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read())


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
    config = ModelConfig.from_dict(run_model(run))
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
        held, failed = [], []
        with held_stderr(held, failed):  # TensorStore's dump of an unreadable step, held
            try:
                out = mngr.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract)))
            except Exception as e:  # a cut-short or corrupt step: one line, not the dump
                failed.append(reason(e))
        if not failed or os.environ.get("TARKA_JAX_DEBUG"):
            os.write(2, held[0])
        if failed:
            raise RunFolderError(f"checkpoint step {step} of {run_dir} cannot be read "
                                 f"({failed[0]}); saved steps: {sorted(mngr.all_steps())}")
    finally:
        mngr.close()
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), out["params"])
    folder = os.path.join(run_dir, STUDENT_DIR)
    return config, params, SentenceTransformerMeta.from_folder(folder), folder, step

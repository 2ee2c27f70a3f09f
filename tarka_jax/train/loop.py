"""The training loop every client runs: open the run folder, build or restore the state,
step, log, evaluate, checkpoint, and stop cleanly on a signal.

A loop (distillation, fine-tuning) is a client: it loads and checks what it needs before
any compute, then hands :func:`run` an object with the :class:`Client` methods. The core
does the rest, the same way for both:

1. the mesh, and the check that the rows embedded at once split over it;
2. the run folder (:mod:`tarka_jax.train.run_files`): claimed (the job lock's call site),
   then a fresh start writes run.json (with the input fingerprints) and creates the
   state born sharded, or a resume checks config and inputs against run.json
   (:mod:`tarka_jax.train.resume_check`) and restores the newest readable step
   (:func:`tarka_jax.train.checkpointing.restore_intact`) and the data position;
3. :func:`train_loop`: batch, step, windowed metrics, evaluation, checkpoints, and on
   SIGINT / SIGTERM a checkpoint of the step reached (:mod:`tarka_jax.train.stop`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Protocol

import jax
import numpy as np

from tarka_jax.runtime import job_folder
from tarka_jax.runtime.distributed import any_process, barrier, is_main_process
from tarka_jax.train import checkpointing as ckpt
from tarka_jax.train import run_files
from tarka_jax.train import sharding as shd
from tarka_jax.train.metrics import MetricsWriter
from tarka_jax.train.optim import make_optimizer
from tarka_jax.train.resume_check import check_resume
from tarka_jax.train.state import abstract_sharded_state, create_state
from tarka_jax.train.stop import DEFAULT_GRACE_SECONDS, StopRequest


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run, beside the config: the command line's flags.

    Attributes:
      max_steps: stop once the state reaches this step (absolute; the learning-rate
        schedule still spans ``train.steps``). None = ``train.steps``.
      resume: continue from the newest readable checkpoint (state and data position);
        without it a folder holding checkpoints is refused.
      config_text: the TOML as read (kept as config.toml, recorded with changes).
      allow_config_change: accept (and record) a resume whose config or inputs differ.
      grace_seconds: the longest a signal-driven stop may take before the process exits.
    """

    max_steps: int | None = None
    resume: bool = False
    config_text: str | None = None
    allow_config_change: bool = False
    grace_seconds: float = DEFAULT_GRACE_SECONDS


class Client(Protocol):
    """What a training loop gives the core (see distill.run / finetune.run)."""

    loop: str  # "distill" | "finetune": run.json's ``loop``
    config: Any  # a tarka_jax.train.config.RunConfig
    model: Any  # the trained model, a tarka_jax.convert.Checkpoint: its params start the state
    error: type[Exception]  # the loop's config error

    def rows(self) -> tuple[int, str]:
        """(rows embedded at once, what the config calls them): must split over the mesh."""

    def sources(self) -> dict:
        """run.json's ``sources``: where the trained model and any other model came from."""

    def inputs(self) -> dict:
        """run.json's ``inputs``: fingerprints of every file trained from."""

    def make_data(self):
        """The batch iterator (a tarka_jax.train.data.EpochPosition) at its start."""

    def make_step(self, tx, schedule, mesh, state_sh):
        """``(state, global batch) -> (state, metrics)``."""

    def next_batch(self, data, mesh):
        """``() -> (global batch, tokens in it over all processes)``."""

    def make_evaluator(self, mesh, param_sh):
        """None or ``params -> metrics`` (run at step 0 of a fresh run and as configured)."""


def run(client: Client, workdir: str, options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Run (or resume) ``client``'s training in ``workdir``; returns the last logged metrics.

    Raises:
      tarka_jax.train.stop.Stopped: a signal stopped the run (its step saved).
    """
    config = client.config
    workdir = os.path.abspath(workdir)
    end = config.train.steps if options.max_steps is None else min(options.max_steps,
                                                                    config.train.steps)
    mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp)
    rows, what = client.rows()
    if rows % mesh.size:
        raise client.error(f"{what} = {rows} must split evenly over the {mesh.size} devices "
                           "of the mesh")
    inputs = client.inputs()
    # One job per run folder (a second distill/finetune into it is refused at once); process
    # 0 checks what the folder holds before any process reads or writes it.
    lock, _ = job_folder.hold(workdir, client.loop, lambda _job: run_files.claim_run_folder(
        workdir, resume=options.resume, loop=client.loop))
    try:
        return _run_locked(client, workdir, options, mesh, inputs, end)
    finally:
        lock.release()


def _run_locked(client: Client, workdir: str, options: RunOptions, mesh, inputs: dict,
                end: int) -> dict[str, Any]:
    config = client.config
    with StopRequest(options.grace_seconds, jax.process_count()) as stop:
        mngr, state, state_sh, data, tx, schedule = _open(client, workdir, options, mesh, inputs)
        writer = None
        try:
            step_fn = client.make_step(tx, schedule, mesh, state_sh)
            evaluator = client.make_evaluator(mesh, state_sh["params"])
            writer = MetricsWriter(workdir, total_steps=end,
                                   start_step=int(jax.device_get(state["step"])),
                                   tensorboard=config.logging.tensorboard,
                                   progress=config.logging.progress)
            return train_loop(config, state, step_fn, client.next_batch(data, mesh), data, end,
                              evaluator, writer, mngr, stop)
        finally:
            mngr.close()
            if writer is not None:
                writer.close()


def _open(client: Client, workdir: str, options: RunOptions, mesh, inputs: dict):
    """(checkpoint manager, state, its shardings, data iterator, optimizer, schedule)."""
    config = client.config
    old = run_files.claim_run_folder(workdir, resume=options.resume, loop=client.loop)
    # Every process checks the folder before any process writes into it (a slower one
    # would see process 0's first files and refuse the folder, leaving process 0 stuck).
    barrier("tarka-jax: run folder checked")
    tx, schedule = make_optimizer(config.optimizer, config.train.steps)
    data = client.make_data()
    keep, async_save = config.checkpoint.keep, config.checkpoint.async_save
    if options.resume:
        steps = ckpt.saved_steps(workdir)
        if not steps:
            raise ckpt.RunFolderError(f"--resume: no checkpoint in {workdir}")
        _check(old, client, inputs, options, workdir, steps[-1], record=False)  # before loading
        abstract, state_sh = abstract_sharded_state(client.model.params, tx, mesh)
        mngr, state, position, step = ckpt.restore_intact(workdir, abstract, keep=keep,
                                                          async_save=async_save)
        try:
            data.set_state(position)
            _check(old, client, inputs, options, workdir, step, record=is_main_process())
        except Exception:
            mngr.close()
            raise
        return mngr, state, state_sh, data, tx, schedule
    steps = ckpt.saved_steps(workdir) if old is not None else []
    if steps:
        raise ckpt.RunFolderError(f"{workdir} already holds checkpoints (latest step "
                                  f"{steps[-1]}); pass --resume to continue or choose a new "
                                  "--workdir")
    error = None
    if is_main_process():  # one writer; the others wait for it at the agreement below
        try:
            _write_fresh(client, workdir, old, inputs, options)
        except Exception as e:  # noqa: BLE001 (raised below, after every process agreed)
            error = e
    if any_process(error is not None):  # also the barrier: run.json is written
        raise error or ckpt.RunFolderError(f"process 0 could not write the run folder "
                                           f"{workdir} (its error says why)")
    state, state_sh = create_state(client.model.params, tx, mesh)
    return ckpt.manager(workdir, keep=keep, async_save=async_save), state, state_sh, data, tx, \
        schedule


def _write_fresh(client: Client, workdir: str, old: dict | None, inputs: dict,
                 options: RunOptions) -> None:
    """A fresh start's run files (process 0): an earlier run set aside, then run.json etc."""
    moved = run_files.set_aside(workdir, old) if old is not None else None
    if moved:
        print(f"tarka-jax: a fresh run in {workdir}: the earlier run's files are now in "
              f"{moved}", file=sys.stderr)
    run = run_files.new_run(client.loop, config=client.config.to_dict(),
                            model=client.model.config.to_dict(), sources=client.sources(),
                            inputs=inputs)
    run_files.write_run_files(workdir, run, config_text=options.config_text,
                              meta=client.model.meta, tokenizer_folder=client.model.folder)


def _check(old: dict, client: Client, inputs: dict, options: RunOptions, workdir: str,
           step: int, *, record: bool) -> None:
    """The resume check: config and inputs as run.json (plus accepted changes) has them."""
    check_resume(workdir, old["config"], client.config.to_dict(), step=step,
                 config_text=options.config_text,
                 allow_config_change=options.allow_config_change,
                 run_inputs=old.get("inputs"), new_inputs=inputs, record=record)


def window_mean(window: list[dict]) -> dict:
    """Mean of each metric over the steps since the last log; ``lr`` of the last step."""
    out = {k: float(np.mean([m[k] for m in window])) for k in window[-1]}
    out["lr"] = float(window[-1]["lr"])
    return out


def train_loop(config, state, step, next_batch, data, end: int, evaluator,
               writer: MetricsWriter, mngr, stop: StopRequest | None = None) -> dict[str, Any]:
    """Steps until ``end`` -- batch, step, log (windowed means), evaluate, checkpoint.

    Args:
      config: has ``train.log_every`` / ``eval_every`` and ``checkpoint.every``.
      step: ``(state, global batch) -> (state, metrics)``, the jitted step.
      next_batch: ``() -> (global batch, tokens in it over all processes)``.
      data: the iterator whose ``epoch`` is logged and ``get_state()`` checkpointed.
      evaluator: None or ``params -> metrics`` (also run at step 0 of a fresh run).
      stop: a :class:`StopRequest`: on a signal, the step reached is logged and saved and
        :class:`~tarka_jax.train.stop.Stopped` raised.
    """
    step_no = int(jax.device_get(state["step"]))
    saved = step_no  # a fresh run's step 0 is the model it started from
    last: dict[str, Any] = {}
    window: list[dict] = []
    tokens, t0 = 0, time.perf_counter()

    def log(evaluate: bool) -> dict:
        nonlocal window, tokens, t0
        metrics = window_mean(jax.device_get(window))
        metrics["tokens_per_s"] = tokens / max(time.perf_counter() - t0, 1e-9)
        metrics["epoch"] = data.epoch
        if evaluate:
            metrics.update(evaluator(state["params"]))
        window, tokens, t0 = [], 0, time.perf_counter()
        return writer.write(step_no, metrics)

    if stop is not None and stop.should_stop(step_no, 1):  # a signal during the set-up
        raise stop.stopped(step_no, saved=step_no > 0)
    if evaluator is not None and step_no == 0:
        last = writer.write(0, evaluator(state["params"]))
    while step_no < end:
        batch, n_tokens = next_batch()
        tokens += n_tokens
        state, metrics = step(state, batch)
        window.append(metrics)
        step_no += 1
        writer.advance()
        do_eval = evaluator is not None and (
            step_no == end or (config.train.eval_every and step_no % config.train.eval_every == 0))
        if step_no % config.train.log_every == 0 or step_no == end or do_eval:
            last = log(do_eval)
        if step_no % config.checkpoint.every == 0 or step_no == end:
            ckpt.save(mngr, step_no, state, data.get_state())
            saved = step_no
        if stop is not None and step_no < end and stop.should_stop(step_no,
                                                                   config.train.log_every):
            if window:
                log(False)
            if saved != step_no:
                ckpt.save(mngr, step_no, state, data.get_state())
            ckpt.wait(mngr)
            raise stop.stopped(step_no, saved=True)
    ckpt.wait(mngr)
    return {"step": step_no, **last}

"""SIGINT / SIGTERM during training: the step reached is saved, the run says how to resume,
a second signal aborts at once, and the stop is bounded by a grace time (issue 26).

Real processes and real signals throughout. The first tests run
:class:`tarka_jax.train.stop.StopRequest` in a child that never imports jax (fast); the
last two run ``tarka-jax distill`` / ``finetune`` as separate processes, stop them with a
signal mid-run, resume, and compare the final parameters bit for bit with an uninterrupted
run (``slow``: six processes that each compile).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tarka_jax.testing.reference import communicate_all, launch_processes
from tarka_jax.testing.run_configs import distill_tables, finetune_tables, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "examples", "data", "tiny_train.txt")
PAIRS = os.path.join(ROOT, "examples", "data", "stdlib", "pairs.jsonl.gz")
TIMEOUT = 420  # seconds, per training process

# A child that stands for a training loop: it checks for a stop at each "step boundary"
# (every 10 ms), or never: its main thread sits inside one long XLA computation (a step or
# a compile that outlasts everything), where Python runs no signal handler.
CHILD = textwrap.dedent("""\
    import sys, time
    from tarka_jax.train.stop import StopRequest
    grace, mode = float(sys.argv[1]), sys.argv[2]
    if mode == "xla":  # compiled first: the call below is all inside XLA
        import jax, jax.numpy as jnp
        endless = jax.jit(lambda x: jax.lax.while_loop(lambda v: v > -1.0, lambda v: v * 0.5 + 1,
                                                       x)).lower(jnp.float32(1)).compile()
    with StopRequest(grace) as stop:
        print("ready", flush=True)
        if mode == "xla":
            endless(jnp.float32(1)).block_until_ready()
        step = 0
        while True:
            time.sleep(0.01)
            step += 1
            if stop.should_stop(step, 1):
                e = stop.stopped(step, saved=True)
                print(f"stopped {e.signum} {e.step}", flush=True)
                sys.exit(e.exit_status)
    """)


def _child(tmp_path, grace: float, mode: str):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    err = open(tmp_path / "child.err", "w+")
    proc = subprocess.Popen([sys.executable, str(script), str(grace), mode], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=err, text=True,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.stdout.readline().strip() == "ready"
    return proc, err


def _wait_for(path_or_file, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hasattr(path_or_file, "seek"):
            path_or_file.seek(0)
            text = path_or_file.read()
        else:
            text = open(path_or_file).read() if os.path.exists(path_or_file) else ""
        if needle in text:
            return text
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} did not appear within {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_at_the_next_step_boundary(tmp_path, sig):
    proc, err = _child(tmp_path, grace=60, mode="checks")
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert out.startswith(f"stopped {int(sig)} ")
    assert f"{signal.Signals(sig).name}: stopping after the current step" in _wait_for(err, "")


def test_a_second_signal_aborts_at_once_even_inside_xla(tmp_path):
    """The main thread never comes back to Python: the watcher thread sees both signals."""
    proc, err = _child(tmp_path, grace=300, mode="xla")
    time.sleep(0.5)  # inside the computation
    proc.send_signal(signal.SIGTERM)
    _wait_for(err, "a second signal aborts at once")  # said while the step still runs
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode in (128 + signal.SIGTERM, -signal.SIGTERM)
    assert time.monotonic() - t0 < 30
    assert "stopped" not in err.read()


def test_a_stop_that_outlasts_the_grace_time_exits(tmp_path):
    proc, err = _child(tmp_path, grace=2, mode="xla")
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert 1.9 <= time.monotonic() - t0 < 30
    assert "not stopped within --grace-seconds 2" in _wait_for(err, "grace")


def test_handlers_are_restored_after_the_run():
    from tarka_jax.train.stop import StopRequest

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopRequest(5) as stop:
        assert signal.getsignal(signal.SIGTERM) == stop._handle
    assert {s: signal.getsignal(s) for s in before} == before


# ---- the real loops -------------------------------------------------------------------------


def _distill_config(folder, models) -> str:
    return write_config(folder / "distill.toml", distill_tables(
        *models, [TRAIN], optimizer={"warmup_steps": 2}, train={"steps": 400},
        checkpoint={"every": 1000, "async_save": True}))


def _finetune_config(folder, model) -> str:
    return write_config(folder / "finetune.toml", finetune_tables(
        model, [PAIRS], train={"steps": 400}, checkpoint={"every": 1000}))


def _launch(command: str, config: str, workdir: str, *extra, processes=1, devices=1):
    return launch_processes([command, "--config", config, "--workdir", workdir, *extra],
                            processes, devices, cwd=ROOT)


def _in_the_loop(procs, workdir: str, steps: int = 3) -> None:
    """Wait until the run has logged ``steps`` steps (it is past its compile)."""
    log = os.path.join(workdir, "metrics.jsonl")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if os.path.isfile(log) and sum(1 for _ in open(log)) >= steps:
            return
        time.sleep(0.005)


def _finish(proc) -> tuple[str, str]:
    [(out, err)] = communicate_all([proc], TIMEOUT)
    return out, err


def _params(workdir: str, step: int) -> dict:
    import jax

    from tarka_jax.convert.run_folder import load_run_params

    flat = jax.tree_util.tree_flatten_with_path(load_run_params(workdir, step)[1])[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def _stop_and_resume(tmp_path, command: str, config: str, sig: int):
    """(uninterrupted run folder, stopped-then-resumed run folder, stop step)."""
    from tarka_jax.train.metrics import read_metrics

    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    [reference] = _launch(command, config, whole, "--max-steps", "40")
    [proc] = _launch(command, config, split, "--max-steps", "40")
    _in_the_loop([proc], split)
    proc.send_signal(sig)
    _, err = _finish(proc)
    assert proc.returncode == 128 + sig, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert last.startswith(f"tarka-jax {command}: stopped by {signal.Signals(sig).name} at step ")
    stop = int(last.split(" at step ")[1].split(";")[0])
    assert 3 <= stop < 40, last
    assert last.endswith(f"resume with: tarka-jax {command} --config {config} --workdir "
                         f"{split} --resume --max-steps 40")
    assert os.path.isdir(os.path.join(split, "checkpoints", str(stop)))
    assert read_metrics(split)[-1]["step"] == stop  # the window up to the stop is logged

    [resumed] = _launch(command, config, split, "--resume", "--max-steps", "40")
    _, err = _finish(resumed)
    assert resumed.returncode == 0, err[-3000:]
    _, err = _finish(reference)
    assert reference.returncode == 0, err[-3000:]
    want, got = _params(whole, 40), _params(split, 40)
    assert got.keys() == want.keys()
    for name, w in want.items():
        np.testing.assert_array_equal(got[name], w, err_msg=name)
    losses = {r["step"]: r["loss"] for r in read_metrics(whole)}
    assert {r["step"]: r["loss"] for r in read_metrics(split)} == losses
    return stop


@pytest.mark.slow
def test_distill_sigterm_saves_the_step_and_resumes_bit_identical(tmp_path):
    from tarka_jax.testing.tiny import write_tiny_models

    models = write_tiny_models(str(tmp_path / "models"))
    _stop_and_resume(tmp_path, "distill", _distill_config(tmp_path, models), signal.SIGTERM)


@pytest.mark.slow
def test_finetune_sigint_saves_the_step_and_resumes_bit_identical(tmp_path, jax_only_model):
    _stop_and_resume(tmp_path, "finetune", _finetune_config(tmp_path, jax_only_model),
                     signal.SIGINT)


@pytest.mark.slow
def test_two_processes_stop_at_one_step_when_one_of_them_gets_sigterm(tmp_path):
    """2 processes x 2 devices; SIGTERM reaches process 1 only (not the one that writes the
    metrics): both stop at the same step and save it together, and the resumed run ends
    where an uninterrupted 2-process run does."""
    from tarka_jax.testing.tiny import write_tiny_models
    from tarka_jax.train.metrics import read_metrics

    config = _distill_config(tmp_path, write_tiny_models(str(tmp_path / "models")))
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    grid = {"processes": 2, "devices": 2}
    reference = _launch("distill", config, whole, "--max-steps", "24", **grid)
    run = _launch("distill", config, split, "--max-steps", "24", **grid)
    _in_the_loop(run, split)
    run[1].send_signal(signal.SIGTERM)
    errs = [err for _, err in communicate_all(run, TIMEOUT)]
    assert [p.returncode for p in run] == [128 + signal.SIGTERM] * 2, [e[-2000:] for e in errs]
    lines = [e.strip().splitlines()[-1] for e in errs]
    steps = {int(line.split(" at step ")[1].split(";")[0]) for line in lines}
    assert len(steps) == 1 and all("checkpoint saved" in line for line in lines), lines
    (stop,) = steps
    assert 3 <= stop < 24 and os.path.isdir(os.path.join(split, "checkpoints", str(stop)))

    resumed = _launch("distill", config, split, "--resume", "--max-steps", "24", **grid)
    for procs in (resumed, reference):
        errs = [err for _, err in communicate_all(procs, TIMEOUT)]
        assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errs]
    want, got = _params(whole, 24), _params(split, 24)
    for name, w in want.items():
        rel = np.linalg.norm(got[name] - w) / np.linalg.norm(w)
        assert rel <= 1e-6, (name, rel)
    assert [r["step"] for r in read_metrics(split)] == list(range(1, 25))

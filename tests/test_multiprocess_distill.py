"""The distillation loop on real processes: ``tarka-jax distill`` as separate OS processes.

* 2 processes x 2 CPU devices (jax.distributed on 127.0.0.1, gloo) == 1 process x 4 devices,
  within the tolerances of the in-process mesh test (tests/test_distill_sharding.py).
* SIGKILL mid-run, then ``--resume``: parameters bit-identical to the uninterrupted run,
  and metrics.jsonl has every step exactly once.

Every process runs under a timeout; models are the tiny JAX-initialised pair.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from tarka_jax.testing.reference import communicate_all, launch_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "examples", "data", "tiny_train.txt")
STEPS = 24
TIMEOUT = 420  # seconds, per process


@pytest.fixture(scope="module")
def run_config(tmp_path_factory):
    from tarka_jax.testing.tiny import write_tiny_models

    folder = tmp_path_factory.mktemp("mp_distill")
    teacher, student = write_tiny_models(str(folder))
    path = folder / "run.toml"
    path.write_text(f"""\
[model]
teacher = {json.dumps(teacher)}
student = {json.dumps(student)}
[data]
train = {json.dumps([TRAIN])}
batch_size = 8
max_seq_length = 32
teacher_max_seq_length = 32
buckets = [16, 32]
[loss]
cosine = 1.0
kl = 1.0
[optimizer]
learning_rate = 3e-3
warmup_steps = 2
[train]
steps = {STEPS}
log_every = 1
[checkpoint]
every = 4
keep = 2
async_save = false
[logging]
progress = false
""")
    return str(path)


def launch(config: str, workdir: str, processes: int, devices: int, resume=False):
    args = ["distill", "--config", config, "--workdir", workdir] + (["--resume"] if resume
                                                                     else [])
    return launch_processes(args, processes, devices, cwd=ROOT)


def wait(procs, timeout=TIMEOUT):
    errors = [err for _, err in communicate_all(procs, timeout)]
    assert [p.returncode for p in procs] == [0] * len(procs), [e[-3000:] for e in errors]


def params(workdir: str, step: int) -> dict:
    import jax

    from tarka_jax.distill.export import load_run_step

    flat = jax.tree_util.tree_flatten_with_path(load_run_step(workdir, step)[1])[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def _count_lines(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def metrics(workdir: str) -> list[dict]:
    from tarka_jax.train.metrics import read_metrics

    return read_metrics(workdir)


@pytest.fixture(scope="module")
def reference_run(run_config, tmp_path_factory):
    """1 process x 4 devices, uninterrupted."""
    workdir = str(tmp_path_factory.mktemp("ref") / "run")
    wait(launch(run_config, workdir, 1, 4))
    return workdir


@pytest.mark.slow
def test_distill_two_processes_equal_one_process(run_config, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    wait(launch(run_config, workdir, 2, 2))
    want, got = params(reference_run, STEPS), params(workdir, STEPS)
    assert got.keys() == want.keys()
    for name, w in want.items():
        rel = np.linalg.norm(got[name] - w) / np.linalg.norm(w)
        assert rel <= 1e-5, (name, rel)
    ref_losses = [r["loss"] for r in metrics(reference_run)]
    np.testing.assert_allclose([r["loss"] for r in metrics(workdir)], ref_losses, rtol=1e-5)


@pytest.mark.slow
def test_distill_sigkill_then_resume_is_bit_identical(run_config, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    [proc] = launch(run_config, workdir, 1, 4)
    log = os.path.join(workdir, "metrics.jsonl")
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.isfile(log) and _count_lines(log) >= 6:  # past checkpoint 4
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=TIMEOUT)
    logged = [r["step"] for r in metrics(workdir)]
    assert proc.returncode == -signal.SIGKILL and logged[-1] < STEPS, "killed too late"

    wait(launch(run_config, workdir, 1, 4, resume=True))
    want, got = params(reference_run, STEPS), params(workdir, STEPS)
    for name, w in want.items():
        np.testing.assert_array_equal(got[name], w, err_msg=name)
    rows = metrics(workdir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # no duplicate rows
    assert [r["loss"] for r in rows] == [r["loss"] for r in metrics(reference_run)]

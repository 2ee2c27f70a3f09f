"""The shared multi-process flags: flags win over the environment; bad combinations are errors."""

from __future__ import annotations

import argparse

import pytest

from tarka_jax.runtime import distributed


def _args(*argv):
    p = argparse.ArgumentParser()
    distributed.add_arguments(p)
    return p.parse_args(list(argv))


def test_plan_flags_win_over_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "8",
           "JAX_PROCESS_ID": "3", "SLURM_NTASKS": "8"}
    flags = _args("--coordinator-address", "127.0.0.1:5555", "--num-processes", "2",
                  "--process-id", "1")
    assert distributed.plan(flags, env) == {"coordinator_address": "127.0.0.1:5555",
                                            "num_processes": 2, "process_id": 1}
    assert distributed.plan(_args(), env) == {"coordinator_address": "10.0.0.1:1234",
                                              "num_processes": 8, "process_id": 3}
    assert distributed.plan(_args(), {"SLURM_NTASKS": "4"}) == {}  # jax detects the rest
    assert distributed.plan(_args(), {"TPU_WORKER_HOSTNAMES": "a,b"}) == {}
    assert distributed.plan(_args(), {"SLURM_NTASKS": "1"}) is None  # one process


def test_plan_rejects_partial_or_bad_flags():
    with pytest.raises(ValueError, match="missing --process-id"):
        distributed.plan(_args("--coordinator-address", "h:1", "--num-processes", "2"), {})
    with pytest.raises(ValueError, match="--process-id must be in 0..1"):
        distributed.plan(_args("--coordinator-address", "h:1", "--num-processes", "2",
                               "--process-id", "2"), {})
    with pytest.raises(ValueError, match="HOST:PORT"):
        distributed.plan(_args("--coordinator-address", "h", "--num-processes", "2",
                               "--process-id", "0"), {})
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        distributed.plan(None, {"JAX_COORDINATOR_ADDRESS": "h:1"})

"""One way to start several processes, for every command that can run on many (embed-corpus,
distill, fine-tuning).

Either the three flags ``--coordinator-address HOST:PORT --num-processes N --process-id I``
(all three or none), or the environment that ``jax.distributed.initialize()`` reads or detects:
``JAX_COORDINATOR_ADDRESS`` (+ ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), a SLURM job with more
than one task, Open MPI ranks, or a multi-host TPU slice (``TPU_WORKER_HOSTNAMES``).

**The flags win**: when they are given the environment is not consulted, so a command line always
says what runs (a SLURM allocation can still start a differently split job). Neither: one
process, and ``jax.distributed`` is never touched.

On CPU, cross-process collectives (the barriers below) need the gloo implementation; it is chosen
here unless the user set ``JAX_CPU_COLLECTIVES_IMPLEMENTATION`` (GPU and TPU ignore the option).
Everything here must run before any other jax call has created a backend.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from tarka_jax.errors import UsageError

_FLAGS = ("coordinator_address", "num_processes", "process_id")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The three multi-process flags (a titled group, so ``--help`` keeps them together)."""
    g = parser.add_argument_group(
        "several processes", "all three, or none (then jax.distributed's environment variables "
        "or a detected SLURM / Open MPI / TPU cluster; the flags win over the environment)")
    g.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                   help="address of process 0's coordinator service")
    g.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="how many processes take part")
    g.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="this process's index, 0..N-1")


def _from_flags(args) -> dict[str, Any] | None:
    given = {k: getattr(args, k, None) for k in _FLAGS}
    if all(v is None for v in given.values()):
        return None
    missing = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is None]
    if missing:
        raise UsageError(f"the multi-process flags go together: missing {', '.join(missing)}")
    n, i = given["num_processes"], given["process_id"]
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--process-id must be in 0..{n - 1} and --num-processes >= 1, "
                         f"got --process-id {i} --num-processes {n}")
    host, sep, port = given["coordinator_address"].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--coordinator-address must be HOST:PORT, got "
                         f"{given['coordinator_address']!r}")
    return given


def _from_environment(env=os.environ) -> dict[str, Any] | None:
    if "JAX_COORDINATOR_ADDRESS" in env:
        try:
            return {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
                    "num_processes": int(env["JAX_NUM_PROCESSES"]),
                    "process_id": int(env["JAX_PROCESS_ID"])}
        except (KeyError, ValueError):
            raise UsageError("JAX_COORDINATOR_ADDRESS is set: JAX_NUM_PROCESSES and "
                             "JAX_PROCESS_ID must be set to integers too") from None
    detected = (int(env.get("SLURM_NTASKS", "1")) > 1
                or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
                or "," in env.get("TPU_WORKER_HOSTNAMES", ""))
    return {} if detected else None  # {}: let jax.distributed detect the cluster itself


def plan(args=None, env=os.environ) -> dict[str, Any] | None:
    """The ``jax.distributed.initialize`` keyword arguments, or None for one process."""
    flags = _from_flags(args) if args is not None else None
    return flags if flags is not None else _from_environment(env)


def initialize(args=None) -> bool:
    """Start ``jax.distributed`` if the flags or the environment ask for it; True if started."""
    kwargs = plan(args)
    if kwargs is None:
        return False
    import jax

    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return True


def barrier(name: str) -> None:
    """Wait until every process reaches ``name`` (a no-op for one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast_bytes(data: bytes, size: int = 1024) -> bytes:
    """Process 0's ``data`` (at most ``size`` bytes) on every process; itself for one process.

    How a job's processes agree on what only process 0 can decide (the job id once it holds
    the output folder's lock, or why it was refused).
    """
    import jax

    if len(data) > size:
        data = data[:size]
    if jax.process_count() == 1:
        return data
    import numpy as np
    from jax.experimental import multihost_utils

    buf = np.zeros(size + 4, np.uint8)  # [4-byte length][payload]
    if jax.process_index() == 0:
        buf[:4] = np.frombuffer(len(data).to_bytes(4, "little"), np.uint8)
        buf[4:4 + len(data)] = np.frombuffer(data, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf), np.uint8)
    n = int.from_bytes(out[:4].tobytes(), "little")
    return out[4:4 + n].tobytes()


def is_main_process() -> bool:
    """True on process 0 (the one that writes a job's shared files); True with one process."""
    import jax

    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """True when ``flag`` is True on any process: every process gets the same answer (one
    small all-gather; the flag itself with one process). Every process must call it."""
    import jax

    if jax.process_count() == 1:
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))
    return bool(np.any(flags))


__all__ = ["add_arguments", "any_process", "barrier", "broadcast_bytes", "initialize",
           "is_main_process", "plan"]

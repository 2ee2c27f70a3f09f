"""One job's processes take an output folder together: process 0 locks and prepares it, every
process learns the outcome, the others join the lock.

Every multi-process writer (``embed-corpus``, ``distill``, ``finetune``) opens its output folder
through :func:`hold`, so "one job per folder" and "all processes agree before anyone writes" are
one rule in one place. A failure on process 0 is raised on process 0 and reported, by its
message, on every other process (none is left waiting at a collective).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tarka_jax.errors import TarkaError
from tarka_jax.files.joblock import JobLock
from tarka_jax.files.marker import new_run_id
from tarka_jax.runtime import distributed


class FolderNotTakenError(TarkaError):
    """Process 0 could not take the output folder (seen on the other processes)."""


def hold(folder: str, what: str, prepare: Callable[[str], None] | None = None
         ) -> tuple[JobLock, str]:
    """``(lock, job id)`` once ``folder`` is this job's: process 0 creates it if needed, takes
    its :class:`JobLock` and runs ``prepare(job_id)`` (e.g. checks what the folder holds and
    writes the job's first file); the other processes then join the lock. A folder this call
    created is removed again (while still empty) when taking it fails. Every process calls it.
    """
    import jax

    leader, lock, error, status = jax.process_index() == 0, None, None, b""
    if leader:
        job_id = new_run_id()
        created = not os.path.isdir(folder)
        try:
            if os.path.lexists(folder) and not os.path.isdir(folder):
                raise FolderNotTakenError(f"{folder} is a file, not a folder")
            os.makedirs(folder, exist_ok=True)
            lock = JobLock.acquire(folder, job_id, what=what, leader=True)
            if prepare is not None:
                prepare(job_id)
            status = b"ok:" + job_id.encode()
        except Exception as e:  # noqa: BLE001 -- told to every process, then re-raised
            error, status = e, b"error:" + str(e).encode()
            if lock is not None:
                lock.release()
            if created and os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
    status = distributed.broadcast_bytes(status)
    if error is not None:
        raise error
    if not status.startswith(b"ok:"):
        raise FolderNotTakenError(f"process 0 could not take {folder}: "
                                  + status.removeprefix(b"error:").decode(errors="replace"))
    job_id = status[3:].decode()
    if not leader:
        lock = JobLock.acquire(folder, job_id, what=what, leader=False)
    return lock, job_id


__all__ = ["FolderNotTakenError", "hold"]

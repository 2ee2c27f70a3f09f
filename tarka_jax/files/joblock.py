"""One job per output folder: a lock that a job's own processes share and any other job meets.

A job that writes one folder from P processes (``embed-corpus``, ``distill``, ``finetune``;
``mteb`` from one) holds ``DIR/.tarka-jax-lock`` for as long as it writes::

    lock = JobLock.acquire(folder, job_id, what="embed-corpus", leader=(process_index == 0))
    try:
        ...                       # write into folder
    finally:
        lock.release()

* The **leader** (process 0) takes an exclusive ``flock`` on the file (created without
  following a symlink, refused if it holds anything but a tarka-jax lock) and writes who
  holds it: job id, command, host, pid, start time. A second job's leader fails at once
  with :class:`JobLockError` naming that holder.
* The **followers** (processes 1..P-1, after the leader succeeded: the caller broadcasts the
  job id, e.g. :func:`tarka_jax.runtime.distributed.broadcast_bytes`) read the file and
  check it names their job id. That also proves the folder is on storage they all see.
* A crashed holder: the kernel drops a ``flock`` when its process dies, so the next job
  simply takes it (the file's stale content is overwritten). ``release`` unlinks the file
  while still holding it; a taker checks that the file it locked is still the one at the
  path (inode), so an unlink race cannot give two jobs the lock.
* Shared storage: ``flock`` is honoured across hosts on NFSv4 and on NFSv3 with lockd (the
  Linux client maps it to a POSIX lock the server arbitrates; a dead *host*'s lock lapses
  with its lease, ~90 s on NFSv4), on Lustre mounted with ``flock``, on CephFS and GPFS.
  Where the file system refuses locks (ENOLCK / EOPNOTSUPP: NFS mounted ``nolock``, some
  FUSE file systems) the lock falls back to the file's content: a holder on this host is
  checked for liveness by pid; a holder on another host cannot be, so the job is refused
  and the message says how to clear a stale file. On file systems that accept ``flock``
  calls but do not share them between hosts (a ``local_lock=all`` NFS mount, gcsfuse),
  two jobs on two hosts are **not** kept apart: docs/safety.md says so.

Bottom layer: imports nothing of tarka_jax but :mod:`tarka_jax.errors` (and the ownership
module's reserved name).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import stat

from tarka_jax.errors import TarkaError
from tarka_jax.files.marker import LOCK

FORMAT = "tarka-jax-lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.ENOTSUP)


class JobLockError(TarkaError):
    """The output folder is in use by another job (or its lock file is not ours)."""


def _read(fd: int) -> dict | None:
    """The lock file's content: {} when empty, None when it is not a tarka-jax lock."""
    data = os.pread(fd, 1 << 16, 0)
    if not data.strip():
        return {}
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) and value.get("format") == FORMAT else None


def describe(holder: dict | None) -> str:
    if not holder:
        return "another tarka-jax job"
    return (f"{holder.get('what', 'a job')} (job {str(holder.get('job'))[:12]}, pid "
            f"{holder.get('pid')} on {holder.get('host')}, since {holder.get('started')})")


def _alive_here(holder: dict) -> bool:
    """Whether a holder recorded on this host is a live process (cannot tell: True)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid")), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True
    return True


def _open(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise JobLockError(f"{path} is not a regular file: not a tarka-jax lock")
    return fd


class JobLock:
    """A held lock on ``folder`` for job ``job_id`` (see the module docstring)."""

    def __init__(self, folder: str, job_id: str, fd: int | None):
        self.folder, self.job_id, self._fd = folder, job_id, fd
        self.path = os.path.join(folder, LOCK)

    @classmethod
    def acquire(cls, folder: str, job_id: str, *, what: str = "a tarka-jax job",
                leader: bool = True) -> JobLock:
        """Take (leader) or join (follower) the lock of ``folder``, which must exist."""
        path = os.path.join(folder, LOCK)
        if not leader:
            return cls._join(folder, path, job_id)
        for _ in range(100):  # retried only when a releasing holder unlinked the file
            try:
                fd = _open(path)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise JobLockError(f"{path} is a symlink: not a tarka-jax lock") from None
                raise
            try:
                holder = _read(fd)
                if holder is None:
                    raise JobLockError(f"{path} exists and is not a tarka-jax lock file; "
                                       "move it away")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise JobLockError(f"{folder} is in use by {describe(_read(fd))}; wait "
                                       "for it to finish or choose another folder") from None
                except OSError as e:
                    if e.errno not in _NO_LOCKS:
                        raise
                    if holder and holder.get("job") != job_id and _alive_here(holder):
                        raise JobLockError(
                            f"{folder} is in use by {describe(holder)} (this file system "
                            f"has no locks, so a holder on another host cannot be checked: "
                            f"if that job is gone, delete {path})") from None
                try:
                    same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                info = {"format": FORMAT, "job": job_id, "what": what,
                        "host": socket.gethostname(), "pid": os.getpid(),
                        "started": datetime.datetime.now().astimezone().isoformat(
                            timespec="seconds")}
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
                os.fsync(fd)
                return cls(folder, job_id, fd)
            except BaseException:
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                raise
        raise JobLockError(f"could not take the lock {path} (it keeps being replaced)")

    @classmethod
    def _join(cls, folder: str, path: str, job_id: str) -> JobLock:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            raise JobLockError(f"{path} is missing on this host: the job's process 0 holds "
                               f"the lock of {folder}, so the folder is not on storage every "
                               "process sees (it must be)") from None
        try:
            holder = _read(fd)
        finally:
            os.close(fd)  # a follower holds no flock: closing cannot drop the leader's
        if not holder or holder.get("job") != job_id:
            raise JobLockError(f"{folder} is held by {describe(holder)}, not by this job's "
                               "process 0: is the folder on storage every process sees?")
        return cls(folder, job_id, None)

    def release(self) -> None:
        """Leader: unlink the lock file while holding it, then let go. Follower: nothing."""
        if self._fd is None:
            return
        try:
            if os.fstat(self._fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino:
                os.remove(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["JobLock", "JobLockError", "describe"]

"""Writing files and swapping folders so that a reader never sees half of either.

* :func:`write_atomic` writes a file under a hidden temporary carrying the run's id
  (:func:`~tarka_jax.files.ownership.tmp_name`), fsyncs it and renames it into place; on any
  error (a kill leaves the temporary, which the next run of that job recognises) it removes
  the temporary. It returns the :class:`~tarka_jax.files.ownership.Claim` of what it wrote,
  hashed while writing (no second read).
* :func:`disk_errors` turns a full disk, a quota or a file-size limit into one
  :class:`DiskFullError` naming the path, instead of numpy's "384000 requested and 276448
  written".
* :func:`exchange` swaps two paths in one step with Linux's ``renameat2(RENAME_EXCHANGE)``
  (through ctypes); it returns False where the kernel, the C library or the file system
  cannot, and the caller falls back to two renames.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import sys
from collections.abc import Callable

from tarka_jax.errors import TarkaError
from tarka_jax.files.marker import Claim, ident_of, tmp_name

_FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
         errno.EFBIG: "file size limit exceeded"}


class DiskFullError(TarkaError):
    """The disk (or a quota, or a file-size limit) stopped a write; the message names the path."""


@contextlib.contextmanager
def disk_errors(path: str, hint: str = ""):
    """Re-raise a full disk / quota / size limit as :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except OSError as e:
        short = "requested and" in str(e) and "written" in str(e)  # numpy's short write
        if e.errno not in _FULL and not short:
            raise
        why = _FULL.get(e.errno, "disk full (short write)")
        try:
            free = os.statvfs(os.path.dirname(path) or ".")
            left = f"; {free.f_bavail * free.f_frsize} bytes free there"
        except OSError:
            left = ""
        raise DiskFullError(f"{why}: could not write {path}{left}"
                            + (f"; {hint}" if hint else "")) from None


class HashingWriter:
    """A write-only file object that hashes (sha256) and counts what passes through it.

    Not a real file to numpy (no ``fileno``), so ``np.save`` writes through ``write`` and a
    full disk raises ``OSError(ENOSPC)`` instead of a short-write message.
    """

    def __init__(self, f):
        self._f = f
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.size += len(view)
        return self._f.write(view)

    def flush(self) -> None:
        self._f.flush()


def _open_tmp(path: str) -> int:
    """Create a temporary exclusively (a user's file of that name is never opened)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


def write_atomic(path: str, fill: Callable[[HashingWriter], None], run_id: str,
                 hint: str = "") -> Claim:
    """Write ``path`` through ``fill(writer)`` under a temporary, fsync, rename; its claim.

    The temporary is ``.NAME.tarka-tmp-RUNID`` beside ``path`` (created exclusively: a
    user's file of that name is never opened). Disk errors become :class:`DiskFullError`.
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, tmp_name(name, run_id))
    with disk_errors(path, hint):
        fd = _open_tmp(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                w = HashingWriter(f)
                fill(w)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
    return Claim(w.size, w.digest.hexdigest(), ident_of(os.lstat(path)))


def write_bytes_atomic(path: str, data: bytes, run_id: str, hint: str = "") -> Claim:
    return write_atomic(path, lambda w: w.write(data), run_id, hint)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: str, b: str) -> bool:
    """Swap paths ``a`` and ``b`` atomically; False where that is not supported (then
    nothing moved). Other errors raise ``OSError``."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # the file system (or kernel) has no exchange
    raise OSError(err, os.strerror(err), a, None, b)


__all__ = ["DiskFullError", "HashingWriter", "disk_errors", "exchange", "write_atomic",
           "write_bytes_atomic"]

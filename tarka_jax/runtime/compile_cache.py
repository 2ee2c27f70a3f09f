"""JAX's persistent compilation cache under the user's cache directory.

Compiling the 24-layer model for a new shape takes tens of seconds on a small
CPU; with the cache a second process loads the compiled program from disk
instead. :func:`enable_compilation_cache` must run before the first
compilation (the CLI calls it at start-up).

Environment variable ``TARKA_JAX_COMPILATION_CACHE``:
  unset / empty  the default directory, ``<user cache dir>/tarka-jax/jax-compilation``
  ``0`` / ``off`` / ``false``  do not enable the cache
  any other value  the directory to use

A cache that cannot be used (the value names a file, the folder is not writable, the
disk is full) is reported once on stderr and the command goes on without it.

The same directory keeps the Embedder's exported forward programs (``programs/``,
:mod:`tarka_jax.runtime.program_cache`): with both, a second process neither traces nor
compiles a shape it has seen.

The cache holds compiled machine code and is trusted by JAX: keep it in a
directory only you can write to (the default is under your home directory).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ENV_VAR = "TARKA_JAX_COMPILATION_CACHE"
_OFF = {"0", "off", "false", "no"}
PROGRAMS_SUBDIR = "programs"  # exported forward programs (jax's own files end in -cache)


def user_cache_dir() -> Path:
    """The platform's per-user cache directory (XDG on Linux)."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def cache_path(path: str | os.PathLike | None = None) -> Path | None:
    """The directory :func:`enable_compilation_cache` would use, or None when turned off.

    An explicit ``path`` wins over the environment variable.
    """
    if path is not None:
        return Path(path).expanduser()
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    return user_cache_dir() / "tarka-jax" / "jax-compilation"


def enable_compilation_cache(path: str | os.PathLike | None = None, *,
                             programs: bool = True) -> Path | None:
    """Turn on JAX's persistent compilation cache; returns its directory (None: off).

    Every compiled program is cached (no minimum compile time or size): the
    programs an Embedder compiles are few and each costs seconds. ``programs``
    also keeps the Embedder's traced forward programs (:mod:`tarka_jax.runtime.program_cache`)
    in ``<directory>/programs``, so a new process skips tracing the model too.
    """
    import jax

    from tarka_jax.runtime import program_cache

    directory = cache_path(path)
    why = None if directory is None else unusable(directory)
    if directory is None or why:
        program_cache.disable()
        if why:
            program_cache.warn_once(f"compilation cache {directory} cannot be used ({why}); "
                                    f"compiling without it (set {ENV_VAR} to another folder, "
                                    "or 0 to turn it off)")
        return None
    if programs:
        program_cache.enable(directory / PROGRAMS_SUBDIR)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return directory


def unusable(directory: Path) -> str | None:
    """Why ``directory`` cannot hold the cache (not a folder, not writable, disk full), or None.

    Creates it and writes and deletes a small probe file: a cache that fails here would
    fail every command, and the cache is only ever an optimisation.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=directory)
        try:
            os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        return e.strerror or type(e).__name__
    return None

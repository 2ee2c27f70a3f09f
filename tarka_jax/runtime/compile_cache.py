"""JAX's persistent compilation cache under the user's cache directory.

Compiling the 24-layer model for a new shape takes tens of seconds on a small
CPU; with the cache a second process loads the compiled program from disk
instead. :func:`enable_compilation_cache` must run before the first
compilation (the CLI calls it at start-up).

Environment variable ``TARKA_JAX_COMPILATION_CACHE``:
  unset / empty  the default directory, ``<user cache dir>/tarka-jax/jax-compilation``
  ``0`` / ``off`` / ``false``  do not enable the cache
  any other value  the directory to use

The same directory keeps the Embedder's exported forward programs (``programs/``,
:mod:`tarka_jax.runtime.program_cache`): with both, a second process neither traces nor
compiles a shape it has seen.

The cache holds compiled machine code and is trusted by JAX: keep it in a
directory only you can write to (the default is under your home directory).
"""

from __future__ import annotations

import os
import sys
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
    if directory is None:
        program_cache.disable()
        return None
    if programs:
        program_cache.enable(directory / PROGRAMS_SUBDIR)
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return directory

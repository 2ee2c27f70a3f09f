"""Forward programs kept on disk with ``jax.export``, so a new process skips tracing the model.

Why: with JAX's persistent compilation cache on (:mod:`tarka_jax.runtime.compile_cache`),
a second ``tarka-jax embed`` process still traces the 24-layer Flax model in
Python and lowers it to StableHLO (2-5 s on a small CPU) before XLA can look its
compiled program up. An exported program *is* that traced and lowered forward
for one input shape and setting: a process that finds it on disk deserialises
it in milliseconds, and XLA's persistent cache supplies the machine code.

The file name is a hash of everything the program depends on: the code (this
package's Python sources), the jax and jaxlib versions, the backend and device
kind, the function and its static settings (model config, dtype, attention,
segments per row), and every argument's shape, dtype and sharding. A program is
written to a temporary name and renamed, so a killed process never leaves a
partial file; a file that fails to load is reported (warning) and replaced; a disk that
is full or read-only is reported once and the command goes on without storing programs.

Not cached (they trace as before): programs ``jax.export`` refuses to
serialise (Pallas Triton kernels are custom calls without a compatibility
guarantee), and a jax without the optional ``flatbuffers`` package.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import jax

_LOG = logging.getLogger(__name__)
_SUFFIX = ".jaxexport"
_FORMAT = 1  # bump when the key or the file layout changes


@functools.cache
def source_fingerprint() -> str:
    """sha256 of every Python source of ``tarka_jax`` (paths and bytes), kernels/ and convert/
    included wherever they are installed from (a checkout keeps them beside ``tarka_jax/``)."""
    digest = hashlib.sha256()
    for package in ("tarka_jax", "tarka_jax.kernels", "tarka_jax.convert"):
        root = Path(importlib.util.find_spec(package).submodule_search_locations[0]).resolve()
        for path in sorted(root.rglob("*.py")):
            rel = f"{package}/{path.relative_to(root)}"
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def program_key(fn: Callable, static: dict[str, Any], args: tuple) -> str:
    """The file name (without suffix) of ``fn(*args, **static)``'s exported program."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(args)
    parts = [f"format {_FORMAT}", f"jax {jax.__version__}", source_fingerprint(),
             f"backend {jax.default_backend()}", f"device {jax.devices()[0].device_kind}",
             f"fn {fn.__module__}.{fn.__qualname__}", str(treedef)]
    parts += [f"{name}={value!r}" for name, value in sorted(static.items())]
    for path, leaf in leaves:
        parts.append(f"{jax.tree_util.keystr(path)} {leaf.shape} {leaf.dtype} "
                     f"{getattr(leaf, 'sharding', None)}")
    try:
        import jaxlib

        parts.append(f"jaxlib {jaxlib.__version__}")
    except ImportError:  # pragma: no cover - jax always ships with jaxlib
        pass
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


class ProgramCache:
    """Exported programs in one directory; :meth:`program` gives a callable per key."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.stats = collections.Counter()  # exported / loaded / replaced / not_exportable
        self._programs: dict[str, Callable | None] = {}
        self.writable = True  # False after a write failed (full or read-only disk)

    def program(self, fn: Callable, static: dict[str, Any], args: tuple) -> Callable | None:
        """A jitted callable equal to ``fn(*args, **static)`` for arguments like ``args``.

        Loads the exported program from disk, or exports and stores it; None when the
        program cannot be exported (the caller then runs ``fn`` itself).
        """
        leaves, treedef = jax.tree.flatten(args)
        # In-process memo on hashable parts: the file key's text form walks every leaf's
        # path and sharding (~20 ms at full size), too slow for every forward pass.
        memo = (fn, tuple(sorted(static.items())), treedef,
                tuple((x.shape, x.dtype, getattr(x, "sharding", None)) for x in leaves))
        if memo not in self._programs:
            key = program_key(fn, static, args)
            exported = self._load(key) or self._export(key, fn, static, args)
            self._programs[memo] = None if exported is None else jax.jit(exported.call)
        return self._programs[memo]

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}{_SUFFIX}"

    def _load(self, key: str):
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            exported = jax.export.deserialize(bytearray(path.read_bytes()))
        except OSError as e:  # unreadable: trace instead, as without a cache
            _LOG.info("exported program %s not read: %s", path, e)
            return None
        except Exception as e:  # a damaged or foreign file: replace it below
            warnings.warn(f"exported program {path} could not be loaded ({type(e).__name__}: "
                          f"{e}); exporting it again", stacklevel=3)
            self.stats["replaced"] += 1
            return None
        self.stats["loaded"] += 1
        return exported

    def _export(self, key: str, fn: Callable, static: dict[str, Any], args: tuple):
        specs = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            args)
        try:
            exported = jax.export.export(jax.jit(functools.partial(fn, **static)))(*specs)
            data = exported.serialize()
        except Exception as e:  # custom calls export refuses; no flatbuffers
            _LOG.info("forward program not exported (traced every process): %s: %s",
                      type(e).__name__, e)
            self.stats["not_exportable"] += 1
            return None
        if self.writable:
            self._store(key, data)
        return exported

    def _store(self, key: str, data: bytes) -> None:
        """Write one program (temporary name, then rename); a full or read-only disk turns
        writing off for this cache with one warning: the program still runs."""
        partial = self._path(key).with_suffix(f".partial-{os.getpid()}")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            os.replace(partial, self._path(key))
        except OSError as e:
            self.writable = False
            partial.unlink(missing_ok=True)
            warn_once(f"cannot write to the program cache {self.directory} "
                      f"({e.strerror or type(e).__name__}); going on without storing programs")
            # JAX's compiled programs go to the same disk: one warning says it, not one each
            warnings.filterwarnings("ignore", "Error writing persistent compilation cache entry")
            return
        self.stats["exported"] += 1


_active: ProgramCache | None = None


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """One line on stderr per distinct message and process (the caches are optional: go on)."""
    if message not in _warned:
        _warned.add(message)
        print(f"tarka-jax: warning: {message}", file=sys.stderr)


def enable(directory: str | os.PathLike) -> ProgramCache:
    """Keep exported forward programs in ``directory`` (the CLI calls this at start-up)."""
    global _active
    _active = ProgramCache(directory)
    return _active


def disable() -> None:
    global _active
    _active = None


def active() -> ProgramCache | None:
    """The enabled cache, or None (the default for the Python API)."""
    return _active

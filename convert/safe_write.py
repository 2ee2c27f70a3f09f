"""Output folders that never destroy what this library did not write.

Every command that writes a model folder goes through :func:`output_folder`::

    with output_folder(out, sources=[src], force=args.force) as tmp:
        save_flax_folder(tmp, ...)          # write everything into tmp

The files are written into a temporary sibling of ``out`` and moved into place only
when complete, so a failure half-way leaves ``out`` as it was. Each folder written
this way gets a marker file (:data:`MARKER`) listing its files. ``force`` replaces an
existing folder only when it is one of ours and holds nothing else; it never
replaces a source, a folder that contains a source, or the current directory.
Each refusal says why (:class:`UnsafeOutputError`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator

from tarka_jax.errors import TarkaError

MARKER = ".tarka-jax-output.json"
_MARKER_FORMAT = "tarka-jax-output"


class UnsafeOutputError(TarkaError):
    """An output folder we refuse to write or replace (the message says why)."""


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def _contains(outer: str, inner: str) -> bool:
    """Whether real path ``inner`` is ``outer`` or lies below it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _files_of(folder: str) -> list[str]:
    """Relative paths of every file and folder below ``folder`` (folders end with '/')."""
    out = []
    for root, dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        out.extend(prefix + d + "/" for d in dirs)
        out.extend(prefix + f for f in files)
    return sorted(out)


def written_by_us(folder: str) -> bool:
    """Whether ``folder`` carries the marker :func:`output_folder` writes."""
    return os.path.isfile(os.path.join(folder, MARKER))


def foreign_files(folder: str) -> list[str]:
    """Entries of ``folder`` that its marker does not list (all of them without a marker)."""
    try:
        with open(os.path.join(folder, MARKER), encoding="utf-8") as f:
            listed = set(json.load(f).get("files", []))
    except (OSError, ValueError, AttributeError):
        listed = set()
    return [p for p in _files_of(folder) if p != MARKER and p not in listed]


def check_output(out: str | os.PathLike, *, sources: Iterable[str | os.PathLike] = (),
                 force: bool = False, what: str = "output folder") -> None:
    """Refuse an output folder that writing (or ``force``-replacing) would make lose data.

    Raises:
      UnsafeOutputError: ``out`` is a file, a source or a folder above one, the current
        directory or above it, or an existing non-empty folder without ``force`` — or,
        with ``force``, one this library did not write or that holds other files.
    """
    real = _real(out)
    for src in sources:
        if src is None or not os.path.exists(os.fspath(src)):
            continue  # a hub id: nothing local to protect
        src_real = _real(src)
        if real == src_real:
            raise UnsafeOutputError(f"{what} {out} is the source {src}; writing it would "
                                    "destroy the source: choose another folder")
        if _contains(real, src_real):
            raise UnsafeOutputError(f"{what} {out} contains the source {src}; replacing it "
                                    "would destroy the source: choose another folder")
    if _contains(real, _real(os.getcwd())):
        raise UnsafeOutputError(f"{what} {out} is the current directory (or above it); "
                                "refusing to replace it: choose a new folder")
    if not os.path.exists(real):
        return
    if not os.path.isdir(real):
        raise UnsafeOutputError(f"{what} {out} exists and is a file, not a folder")
    entries = os.listdir(real)
    if not entries:
        return
    if not force:
        raise UnsafeOutputError(f"{what} {out} already exists and is not empty (pass --force "
                                "to replace a folder tarka-jax wrote, or choose a new folder)")
    if not written_by_us(real):
        raise UnsafeOutputError(
            f"--force refused: {out} was not written by tarka-jax (no {MARKER} marker); "
            "delete it yourself or choose a new folder")
    extra = foreign_files(real)
    if extra:
        shown = ", ".join(extra[:5]) + (f", ... ({len(extra) - 5} more)" if len(extra) > 5 else "")
        raise UnsafeOutputError(f"--force refused: {out} holds files tarka-jax did not write "
                                f"({shown}); move them away or choose a new folder")


def write_marker(folder: str, kind: str) -> None:
    """Record that ``folder`` (and exactly the files now in it) was written by us."""
    files = [p for p in _files_of(folder) if p != MARKER]
    with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as f:
        json.dump({"format": _MARKER_FORMAT, "kind": kind, "files": files}, f, indent=1)
        f.write("\n")


@contextlib.contextmanager
def output_folder(out: str | os.PathLike, *, sources: Iterable[str | os.PathLike] = (),
                  force: bool = False, kind: str = "model") -> Iterator[str]:
    """A temporary folder to write into; moved to ``out`` (marker added) on success.

    The checks of :func:`check_output` run before anything is written. On an
    exception the temporary folder is removed and ``out`` is untouched.
    """
    check_output(out, sources=sources, force=force)
    out = _real(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        yield tmp
        write_marker(tmp, kind)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: str, out: str) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` (checked: ours) is set aside, then removed."""
    if not os.path.exists(out):
        os.rename(tmp, out)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "MARKER",
    "UnsafeOutputError",
    "check_output",
    "foreign_files",
    "output_folder",
    "write_marker",
    "written_by_us",
]

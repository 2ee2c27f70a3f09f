"""Output folders written whole: into a temporary sibling, then swapped in; no user file lost.

Every writer of a model folder (the converters, ``init-student``, ``Embedder.save``, the tiny
and demo models) and ``cache-teacher`` goes through :func:`output_folder`::

    with output_folder(out, sources=[src], force=args.force) as tmp:
        save_flax_folder(tmp, ...)          # write everything into tmp

* ``tmp`` is ``.OUT.tarka-tmp-RUNID`` beside ``out``; on success it gets a marker claiming
  every file in it (:mod:`tarka_jax.files.ownership`) and takes ``out``'s place;
* an existing non-empty ``out`` is refused without ``force``; with it, only when every entry
  is provably ours (:func:`~tarka_jax.files.ownership.survey`), else the refusal names one;
* never replaced: a source, a folder holding a source, the current directory or above, a file;
* the swap is one step where Linux can (``renameat2(RENAME_EXCHANGE)``): there is never a
  moment without ``out``. Elsewhere the old folder is first renamed to ``.OUT.tarka-old-RUNID``
  (the next run names it if the swap was cut short) and deleted only once the new one is in;
* the old folder is then emptied of the files the survey proved ours *and* that are
  unchanged since; anything else (a file saved into ``out`` while we wrote) is kept there and
  named;
* leftovers of killed runs beside ``out`` are removed when provably ours, else named.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterable, Iterator

from tarka_jax.files.atomic import exchange
from tarka_jax.files.marker import (
    MARKER,
    UnsafeOutputError,
    new_run_id,
    parse_tmp,
    tmp_name,
    write_marker,
)
from tarka_jax.files.ownership import Survey, claim_folder, remove_owned, survey, walk


def report(message: str) -> None:
    """A note for the user on stderr (leftovers cleaned or kept)."""
    print(f"tarka-jax: {message}", file=sys.stderr)


def _real(path) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def _contains(outer: str, inner: str) -> bool:
    """Whether real path ``inner`` is ``outer`` or lies below it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def check_output(out, *, sources: Iterable = (), force: bool = False,
                 what: str = "output folder") -> Survey | None:
    """Refuse an output folder that writing (or ``force``-replacing) would make lose data.

    Returns the survey of an existing non-empty folder that ``force`` may replace (None
    when there is nothing to replace).

    Raises:
      UnsafeOutputError: ``out`` is a file, a source or a folder above one, the current
        directory or above it, or an existing non-empty folder without ``force`` -- or, with
        ``force``, one holding anything tarka-jax cannot prove it wrote (named).
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
    if not os.path.lexists(real):
        return None
    if not os.path.isdir(real):
        raise UnsafeOutputError(f"{what} {out} exists and is a file, not a folder")
    if not os.listdir(real):
        return None
    if not force:
        raise UnsafeOutputError(f"{what} {out} already exists and is not empty (pass --force "
                                "to replace a folder tarka-jax wrote, or choose a new folder)")
    try:
        found = survey(real)
    except UnsafeOutputError as e:
        raise UnsafeOutputError(f"--force refused: {e}; delete {out} yourself or choose a "
                                "new folder") from None
    if found.marker is None:
        raise UnsafeOutputError(f"--force refused: {out} was not written by tarka-jax (no "
                                f"{MARKER} marker); delete it yourself or choose a new folder")
    if found.foreign:
        raise UnsafeOutputError(f"--force refused: {out} holds files tarka-jax did not write "
                                f"or that changed since: {found.refusal()}; move them away "
                                "or choose a new folder")
    return found


def _old_name(out: str, run: str) -> str:
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tarka-old-{run}")


def clean_leftovers(out: str) -> None:
    """Remove what killed runs left beside ``out`` when provably ours; name the rest."""
    parent, base = os.path.split(out)
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        path = os.path.join(parent, name)
        tmp = parse_tmp(name)
        old = name.startswith(f".{base}.tarka-old-")
        if not (old or (tmp and tmp[0] == base)) or not os.path.isdir(path):
            continue
        if old and not os.path.lexists(out):
            report(f"{out} is missing and {path} holds its previous copy: a run was killed "
                   "while replacing it; kept (move it back or delete it)")
            continue
        try:
            found = survey(path)
        except UnsafeOutputError:
            found = None
        if found is not None and found.marker is not None and not found.foreign:
            if not remove_owned(found) and not os.listdir(path):
                os.rmdir(path)
                continue
        report(f"{path} was left by an interrupted (or still running) tarka-jax writer and "
               "holds files it cannot prove it wrote; kept: delete it when no job runs")


def _swap_in(tmp: str, out: str, before: Survey | None, run: str) -> None:
    """Put ``tmp`` at ``out``; the old ``out`` (proven ours as ``before``) is emptied."""
    if not os.path.lexists(out):
        os.rename(tmp, out)
        return
    if before is None:
        if os.path.isdir(out) and not os.listdir(out):
            os.rename(tmp, out)  # over an empty folder: one atomic step
            return
        raise UnsafeOutputError(f"{out} appeared (or changed) while tarka-jax was writing it; "
                                "nothing replaced: run again")
    if exchange(tmp, out):
        old = tmp  # the old folder now sits at the temporary name
    else:
        old = _old_name(out, run)
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
    kept = remove_owned(Survey(old, before.owned, before.folders, [], before.marker))
    left = [rel + ("/" if e.is_dir(follow_symlinks=False) else "") for rel, e in walk(old)]
    if not left:
        os.rmdir(old)
        return
    changed = {k.split(" ")[0]: k for k in kept}
    kept = [changed.get(rel, rel) for rel in left]
    if old == tmp:
        os.rename(old, _old_name(out, run))
        old = _old_name(out, run)
    report(f"replaced {out}; kept what tarka-jax did not write in its previous copy, now "
           f"{old}: {', '.join(kept[:5])}")


@contextlib.contextmanager
def output_folder(out, *, sources: Iterable = (), force: bool = False,
                  kind: str = "model") -> Iterator[str]:
    """A temporary folder to write into; swapped into ``out`` (marker added) on success.

    The checks of :func:`check_output` run before anything is written. On an exception
    the temporary folder is removed and ``out`` is untouched.
    """
    before = check_output(out, sources=sources, force=force)
    out = _real(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    clean_leftovers(out)
    run = new_run_id()
    tmp = os.path.join(parent, tmp_name(os.path.basename(out), run))
    os.mkdir(tmp)
    try:
        yield tmp
        write_marker(tmp, claim_folder(tmp, kind, [run]))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # ours alone: created by os.mkdir above
        raise
    # Past this point tmp may hold the *old* folder (after the exchange): never rmtree it.
    _swap_in(tmp, out, before, run)


__all__ = ["check_output", "clean_leftovers", "output_folder", "report"]

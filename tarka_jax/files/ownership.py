"""What tarka-jax can prove it wrote in a folder: the marker, its claims, and what they cover.

Every writer that replaces or deletes files in a folder the user named (the converters and
other model writers, ``embed-corpus``, ``mteb``, ``cache-teacher``) asks this module first.
The rule (docs/safety.md, "Ownership you can prove"):

* a folder we wrote carries a marker, :data:`MARKER` (JSON, format :data:`FORMAT` version
  :data:`VERSION`), holding *claims*: for each file we wrote, its relative path, size and
  sha256 (and, where the writer recorded it, the inode / mtime / ctime it had);
* a file on disk is **ours** when it is a regular file (not a symlink) whose path is claimed,
  with the claimed size, and either the recorded stat identity (same inode, same mtime and
  ctime in nanoseconds: not touched since) or the claimed sha256. A marker copied into a
  user's folder therefore proves nothing about a hand-edited file there;
* a temporary (:func:`tmp_name`: ``.NAME.tarka-tmp-RUNID``) is ours when RUNID is one of the
  marker's ``runs``;
* the marker is validated before any of it is believed: schema, format version, every path
  relative, ``/``-separated, without ``..``, inside the folder. A malformed marker is an error
  naming why (``{"files": "ab"}`` is not a list of the names ``a`` and ``b``).

Nothing here deletes anything the walk did not prove ours a moment before: :func:`survey`
records each owned file's stat, and :func:`remove_owned` deletes a file only while its stat
is still that one (a file saved into the folder meanwhile, or rewritten, is kept).

Bottom layer: imports nothing of tarka_jax but :mod:`tarka_jax.errors`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat as stat_module

from tarka_jax.files.marker import (
    LOCK,
    MARKER,
    MAX_MARKER_BYTES,
    Marker,
    UnsafeOutputError,
    claim_file,
    ident_of,
    parse_marker,
    parse_tmp,
    read_marker,
    sha256_file,
)


def claim_folder(folder: str, kind: str, runs=(), skip=()) -> Marker:
    """A marker claiming every regular file and folder now below ``folder`` (none skipped)."""
    files, folders = {}, []
    for rel, entry in walk(folder):
        if rel in skip:
            continue
        if entry.is_dir(follow_symlinks=False):
            folders.append(rel)
        elif entry.is_file(follow_symlinks=False):
            files[rel] = claim_file(entry.path)
        else:
            raise UnsafeOutputError(f"{entry.path}: tarka-jax writes no links or special files")
    return Marker(kind, list(runs), files, folders)


def walk(folder: str):
    """``(relative path, DirEntry)`` of everything below ``folder``, never following links."""
    stack = [("", folder)]
    while stack:
        prefix, path = stack.pop()
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            yield rel, entry
            if entry.is_dir(follow_symlinks=False):
                stack.append((rel + "/", entry.path))


@dataclasses.dataclass
class Survey:
    """What a folder holds, by ownership: owned files (with the stat seen), folders, the rest."""

    folder: str
    owned: dict[str, tuple]  # rel -> stat identity when proven
    folders: list[str]
    foreign: list[str]  # entries not proven ours, each with why
    marker: Marker | None

    def refusal(self) -> str | None:
        if not self.foreign:
            return None
        shown = "; ".join(self.foreign[:3])
        more = f"; ... ({len(self.foreign) - 3} more)" if len(self.foreign) > 3 else ""
        return shown + more


def _self_proving(entry, tmp: tuple[str, str]) -> bool:
    """A marker's temporary proves itself: empty (killed before its one write) or a valid
    marker naming the run id its name carries."""
    if tmp[0] != MARKER or not entry.is_file(follow_symlinks=False):
        return False
    st = entry.stat(follow_symlinks=False)
    if st.st_size == 0:
        return True
    if st.st_size > MAX_MARKER_BYTES:
        return False
    try:
        with open(entry.path, "rb") as f:
            return tmp[1] in parse_marker(json.loads(f.read()), entry.path).runs
    except (ValueError, UnsafeOutputError):
        return False


def why_not_ours(folder: str, rel: str, marker: Marker | None) -> str | None:
    """None when ``folder/rel`` is provably ours, else a short reason naming it."""
    return _why_not_ours(rel, _Entry(os.path.join(folder, *rel.split("/"))), marker)


class _Entry:
    """The part of ``os.DirEntry`` :func:`_why_not_ours` uses, for a path."""

    def __init__(self, path: str):
        self.path = path
        self._st = os.lstat(path)

    def stat(self, follow_symlinks: bool = False):
        return self._st

    def is_dir(self, follow_symlinks: bool = False) -> bool:
        return stat_module.S_ISDIR(self._st.st_mode)

    def is_file(self, follow_symlinks: bool = False) -> bool:
        return stat_module.S_ISREG(self._st.st_mode)


def _why_not_ours(rel: str, entry, marker: Marker | None) -> str | None:
    """None when ``rel`` is provably ours, else a short reason naming it."""
    if rel == MARKER or rel == LOCK:
        return None
    name = rel.rsplit("/", 1)[-1]
    tmp = parse_tmp(name)
    if tmp is not None and tmp[0] == MARKER and _self_proving(entry, tmp):
        return None  # a marker being written when the run was killed
    if marker is None:
        return f"{rel} (no {MARKER} marker)"
    if entry.is_dir(follow_symlinks=False):
        return None if rel in marker.folders else f"{rel}/ (not listed in the marker)"
    if not entry.is_file(follow_symlinks=False):
        return f"{rel} (a link or special file)"
    if tmp is not None and (tmp[1] in marker.runs or _self_proving(entry, tmp)):
        return None
    claims = marker.claims(rel)
    if not claims:
        return f"{rel} (not listed in the marker)"
    st = entry.stat(follow_symlinks=False)
    sized = [c for c in claims if c.size == st.st_size]
    if not sized:
        return f"{rel} (size {st.st_size}, the marker says {claims[-1].size}: changed)"
    if any(c.ident is not None and ident_of(st) == c.ident for c in sized):
        return None
    if sha256_file(entry.path) not in {c.sha256 for c in sized}:
        return f"{rel} (its contents differ from what tarka-jax wrote)"
    return None


def survey(folder: str, *, marker: Marker | None | bool = True,
           missing_is_foreign: bool = True) -> Survey:
    """Classify every entry below ``folder``; ``marker=True`` reads (and validates) its own.

    ``missing_is_foreign``: a claimed file that is absent counts against the folder (it is
    not the folder we wrote); corpus receipts, which are claims made ahead of a rename,
    pass False.
    """
    if marker is True:
        marker = read_marker(folder)
    owned, folders, foreign = {}, [], []
    for rel, entry in walk(folder):
        why = _why_not_ours(rel, entry, marker or None)
        if why is not None:
            foreign.append(why)
        elif entry.is_dir(follow_symlinks=False):
            folders.append(rel)
        elif rel != LOCK:
            owned[rel] = ident_of(entry.stat(follow_symlinks=False))
    if marker and missing_is_foreign:
        foreign += [f"{rel} (listed in the marker but missing)" for rel in sorted(marker.files)
                    if rel not in owned]
    return Survey(folder, owned, folders, foreign, marker or None)


def remove_owned(survey_: Survey, keep=()) -> list[str]:
    """Delete the owned files (not ``keep``) whose stat is unchanged; returns what was kept.

    Kept: anything not owned, a file changed since the survey, a non-empty folder.
    """
    kept = list(survey_.foreign)
    for rel, ident in survey_.owned.items():
        if rel in keep or rel == MARKER:
            continue
        path = os.path.join(survey_.folder, *rel.split("/"))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if ident_of(st) != ident:
            kept.append(f"{rel} (changed while tarka-jax worked)")
            continue
        os.remove(path)
    for rel in sorted(survey_.folders, key=lambda r: -r.count("/")):
        try:
            os.rmdir(os.path.join(survey_.folder, *rel.split("/")))
        except OSError:
            kept.append(f"{rel}/ (not empty)")
    marker = os.path.join(survey_.folder, MARKER)
    if not kept and MARKER not in keep and os.path.lexists(marker):
        os.remove(marker)  # last: while anything is left, the marker still speaks for it
    return kept


__all__ = ["Survey", "claim_folder", "remove_owned", "survey", "walk", "why_not_ours"]

"""Where ``tarka-jax mteb`` writes: only files it can prove it wrote, under one job lock.

The output folder may hold anything of the user's (an earlier ``summary.json`` of another
tool, notes, mteb's own cache). Every file this command writes -- ``summary.json`` and each
``<model>/<revision>/<task>.json`` -- is claimed in the folder's marker
(:mod:`tarka_jax.files.ownership`) when written; a later run replaces such a file only while
it is still exactly what was written, and refuses (naming it) a file of that name it cannot
prove it wrote. The targets are checked before any evaluation starts, and again at writing.
"""

from __future__ import annotations

import os

from tarka_jax.files.atomic import write_atomic
from tarka_jax.files.joblock import JobLock
from tarka_jax.files.marker import (
    Marker,
    UnsafeOutputError,
    check_relpath,
    new_run_id,
    read_marker,
    write_marker,
)
from tarka_jax.files.ownership import why_not_ours


class ResultsFolder:
    """An mteb output folder held by this run: :meth:`check` targets, :meth:`write` them."""

    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        self.run = new_run_id()
        if os.path.lexists(self.folder) and not os.path.isdir(self.folder):
            raise UnsafeOutputError(f"--output-folder {folder} exists and is not a folder")
        os.makedirs(self.folder, exist_ok=True)
        self.lock = JobLock.acquire(self.folder, self.run, what="mteb")
        try:
            self.marker = read_marker(self.folder) or Marker("mteb", [], {}, [])
        except UnsafeOutputError as e:
            self.lock.release()
            raise UnsafeOutputError(f"--output-folder refused: {e}") from None
        self.marker.runs = [*self.marker.runs[-9:], self.run]

    def check(self, rels) -> None:
        """Refuse, naming it, any target that exists and is not provably ours."""
        for rel in rels:
            check_relpath(rel, "mteb output")
            if not os.path.lexists(os.path.join(self.folder, *rel.split("/"))):
                continue
            why = why_not_ours(self.folder, rel, self.marker)
            if why is not None:
                raise UnsafeOutputError(
                    f"--output-folder {self.folder} already holds {why}; tarka-jax will not "
                    "replace a file it cannot prove it wrote: move it or choose another folder")

    def write(self, rel: str, fill) -> None:
        """Write ``rel`` atomically through ``fill(writer)`` and claim it in the marker."""
        self.check([rel])
        path = os.path.join(self.folder, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.marker.files[rel] = write_atomic(path, fill, self.run)
        write_marker(self.folder, self.marker)

    def close(self) -> None:
        self.lock.release()


__all__ = ["ResultsFolder"]

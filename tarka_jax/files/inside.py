"""Paths a folder's own files name stay inside that folder.

A model folder names other files in its own JSON: ``modules.json`` entries' ``path``
(the Pooling / Dense module folders), a sharded index's ``weight_map`` (the shard
files). A folder someone else wrote must not make us read — and a converter then copy
into its output — ``../secrets`` or ``/etc/passwd``. So every such name must be
*lexically* inside the folder: a relative path with no ``..`` part, no drive, no
backslash, no NUL.

Lexically, not resolved: files and sub-folders that are themselves symbolic links keep
loading. The Hugging Face hub cache is built of them (``snapshots/<rev>/model.safetensors
-> ../../blobs/<sha>``), and users link weights to shared storage; the link is the user's
choice on their own disk, the name in a downloaded JSON file is not.
"""

from __future__ import annotations

import os
import posixpath

from tarka_jax.errors import ConfigError


class FolderPathError(ConfigError):
    """A path named in a folder's file that leaves the folder (or is not a path at all)."""


def inside(folder: str | os.PathLike, name: object, where: str, *, empty: bool = False) -> str:
    """``folder/name`` when ``name`` is a relative path lexically inside ``folder``.

    Args:
      folder: the folder whose file named ``name``.
      name: the value read from that file.
      where: the entry, for the message (``"modules.json entry 2 'path'"``).
      empty: accept ``""`` (the folder itself: modules.json's Transformer entry).

    Raises:
      FolderPathError: naming ``where``, the value and the rule it breaks.
    """
    folder = os.fspath(folder)
    if not isinstance(name, str):
        raise FolderPathError(f"{where} in {folder} must be a string path, got "
                              f"{type(name).__name__} {name!r:.60}")
    if name == "":
        if empty:
            return folder
        raise FolderPathError(f"{where} in {folder} is empty; it must name a file in the folder")
    why = _outside(name)
    if why:
        raise FolderPathError(f"{where} in {folder} is {name!r:.200}: {why}; a folder may name "
                              "only paths inside itself")
    return os.path.join(folder, *posixpath.normpath(name).split("/"))


def _outside(name: str) -> str | None:
    """Why ``name`` may leave the folder it is read from (None: it stays inside)."""
    if "\0" in name:
        return "it holds a NUL character"
    if "\\" in name:
        return "it holds a backslash (paths in model files use '/')"
    if name.startswith("/") or os.path.isabs(name) or name[1:2] == ":":
        return "it is absolute (or names a drive)"
    if ".." in name.split("/"):
        return "it goes up with '..'"
    return None


__all__ = ["FolderPathError", "inside"]

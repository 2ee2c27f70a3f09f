"""What a resume must find unchanged: the bytes of a run's inputs, by size and sha256.

A resumed run that reads an edited training file (same line count), a teacher whose
weights were replaced, or a student folder with another tokenizer would train its later
steps on something other than its earlier ones while ``run.json`` says otherwise. So a run
records, in ``run.json``'s ``inputs``, the size and SHA-256 of every file it trains from:

* ``data.train[i]``: each training data file, in the config's order;
* ``model.<role>/<file>``: the files of each model folder the loader reads (weights, the
  JSON configs, tokenizer files; :data:`MODEL_PATTERNS`), or of a teacher cache (every
  file). A model that is a step of another run is its ``run.json``, ``student/`` and the
  step's ``params``.

Content, not modification times: a run copied to a new VM after a preemption (new
mtimes, maybe new absolute paths) still resumes; only the bytes count, keyed by the config's
role, so a moved folder with the same files is the same input. Hidden files (a writer's
ownership marker) are not inputs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence

# What convert.open_model reads of a model folder (as the hub download patterns).
MODEL_PATTERNS = ("*.json", "*.safetensors", "tokenizer*", "*.model", "*/*.json",
                  "*/*.safetensors")
_BLOCK = 1 << 20
_MAX_DEPTH = 6


def file_fingerprint(path: str) -> dict:
    """``{"size", "sha256"}`` of one file's bytes."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return {"size": size, "sha256": digest.hexdigest()}


def _files(folder: str, patterns: Sequence[str]) -> list[str]:
    """Relative ``/``-paths of the non-hidden regular files under ``folder`` that match."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        rel = os.path.relpath(root, folder)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < _MAX_DEPTH else []
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in sorted(files):
            path = prefix + name
            if not name.startswith(".") and any(fnmatch.fnmatch(path, p) for p in patterns) \
                    and os.path.isfile(os.path.join(root, name)):
                out.append(path)
    return out


def folder_fingerprint(folder: str, patterns: Sequence[str] = MODEL_PATTERNS) -> dict:
    """``{"path", "files": {relative path: {"size", "sha256"}}}`` of a folder's inputs."""
    return {"path": os.path.abspath(folder),
            "files": {rel: file_fingerprint(os.path.join(folder, *rel.split("/")))
                      for rel in _files(folder, patterns)}}


def model_fingerprint(model) -> dict:
    """The fingerprint of what :func:`tarka_jax.convert.open_model` read for ``model`` (a
    :class:`~tarka_jax.convert.Checkpoint`)."""
    if model.kind == "run":  # folder = RUN/student; the step's bare params are the weights
        run = os.path.dirname(os.path.abspath(model.folder))
        return folder_fingerprint(run, ("run.json", "student/*",
                                        f"checkpoints/{model.step}/params/*"))
    return folder_fingerprint(model.folder)


def fingerprint_inputs(data: Mapping[str, Sequence[str]],
                       folders: Mapping[str, dict]) -> dict:
    """run.json's ``inputs``: ``{config key: [file fingerprint + path]}`` for data files and
    ``{config key: folder fingerprint}`` (already made) for models and caches."""
    out: dict = {key: [{"path": os.path.abspath(p), **file_fingerprint(p)} for p in paths]
                 for key, paths in data.items()}
    out.update(folders)
    return out


def compared(inputs: Mapping[str, object] | None) -> dict[str, str]:
    """The comparable view of ``inputs``: ``{"inputs.data.train[0]": "SIZE:SHA256", ...,
    "inputs.model.teacher/model.safetensors": ...}``; paths left out (a moved run resumes)."""
    out = {}
    for key, value in (inputs or {}).items():
        if isinstance(value, list):
            out.update({f"inputs.{key}[{i}]": _short(v) for i, v in enumerate(value)})
        elif isinstance(value, dict):
            out.update({f"inputs.{key}/{rel}": _short(v)
                        for rel, v in value.get("files", {}).items()})
    return out


def where(inputs: Mapping[str, object], name: str) -> str:
    """The file behind a :func:`compared` key, for messages (the name itself if unknown)."""
    key = name.removeprefix("inputs.")
    for role, value in inputs.items():
        if isinstance(value, list) and key.startswith(role + "["):
            i = int(key[len(role) + 1:-1])
            return value[i]["path"] if i < len(value) else name
        if isinstance(value, dict) and key.startswith(role + "/"):
            return os.path.join(value.get("path", ""), key[len(role) + 1:])
    return name


def _short(v: Mapping[str, object]) -> str:
    return f"{v['size']}:{v['sha256']}"


def roles(inputs: Iterable[str]) -> list[str]:
    """The config keys a set of :func:`compared` keys belong to (``data.train``, ...)."""
    return sorted({k.removeprefix("inputs.").split("[")[0].split("/")[0] for k in inputs})

"""What a model argument names, decided in one place: :func:`open_model`.

A model is one of:

* ``builtin:NAME`` — a model shipped inside the package (``tarka_jax/models/NAME``);
* a tarka-jax Flax folder (``tarka_jax_config.json``, written by ``hf_to_flax``);
* a distillation run folder (``run.json``), read at ``step`` (default: the latest);
* a sentence-transformers / HF folder (``config.json``, ``model.safetensors``);
* a hub id ``name`` or ``owner/name``, fetched through huggingface_hub (honours
  ``HF_HUB_OFFLINE`` and the cache). An argument that is no folder here and that the hub
  cannot supply (offline, unreachable, no such repository) is a ``ModelNotFoundError``,
  "model folder not found: X (closest: Y)"; other hub errors (a gated repository, a bad
  token) reach the caller as huggingface_hub raises them.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from tarka_jax.convert.flax_folder import FLAX_CONFIG_FILE, is_flax_folder, load_flax_folder
from tarka_jax.convert.run_folder import is_run_folder, load_run_params
from tarka_jax.convert.st_folder import SentenceTransformerMeta, load_hf_folder
from tarka_jax.errors import InputTypeError, TarkaError
from tarka_jax.nn.config import ModelConfig

BUILTIN_PREFIX = "builtin:"
# tarka_jax/models, found without importing the tarka_jax facade (convert/ sits beside
# tarka_jax/ in a checkout and inside it when installed).
BUILTIN_DIR = os.path.join(importlib.util.find_spec("tarka_jax").submodule_search_locations[0],
                           "models")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*/*.json", "*/*.safetensors"]


@dataclasses.dataclass
class Checkpoint:
    """A loaded model: config, float32 numpy params, ST metadata, and where its tokenizer is.

    ``kind`` is "flax", "run" or "hf"; ``step`` is the run step for a run folder.
    """

    config: ModelConfig
    params: Any
    meta: SentenceTransformerMeta
    folder: str
    kind: str = "hf"
    step: int | None = None


def builtin_models() -> list[str]:
    """Names of the models shipped inside the package (``builtin:NAME``)."""
    if not os.path.isdir(BUILTIN_DIR):
        return []
    return sorted(n for n in os.listdir(BUILTIN_DIR)
                  if os.path.isfile(os.path.join(BUILTIN_DIR, n, "config.json"))
                  or os.path.isfile(os.path.join(BUILTIN_DIR, n, FLAX_CONFIG_FILE)))


def builtin_folder(name: str) -> str:
    """The folder of a shipped model: ``"builtin:demo-mini"`` (or just ``"demo-mini"``)."""
    name = name.removeprefix(BUILTIN_PREFIX)
    if name not in builtin_models():
        available = ", ".join(BUILTIN_PREFIX + n for n in builtin_models()) or "none"
        raise FileNotFoundError(f"no built-in model {BUILTIN_PREFIX}{name} (available: "
                                f"{available})")
    return os.path.join(BUILTIN_DIR, name)


class ModelNotFoundError(TarkaError, FileNotFoundError):
    """A model argument that is no folder here and could not be fetched from the hub."""


def resolve_folder(path_or_id: str | os.PathLike, *, revision: str | None = None,
                   cache_dir: str | None = None, token: str | bool | None = None) -> str:
    """A local folder for a path, ``builtin:NAME`` or hub id.

    A string that names an existing folder is used as is. Anything else that is not a
    hub id (``name`` or ``owner/name``: ``./x``, ``/x``, ``a/b/c``) is a
    :class:`ModelNotFoundError` naming the closest existing folder; a hub id is fetched,
    and when the hub is offline or unreachable, or has no such repository, the same error
    says so (a mistyped ``-m my-modle`` is not a network problem).
    """
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise InputTypeError("model must be a folder path or hub id string, got "
                        f"{type(path_or_id).__name__}")
    if isinstance(path_or_id, str) and path_or_id.startswith(BUILTIN_PREFIX):
        return builtin_folder(path_or_id)
    text = os.path.expanduser(os.fspath(path_or_id))
    if os.path.isdir(text):
        return text
    if os.path.exists(text):
        raise NotADirectoryError(f"{text} is a file; a model is a folder (or a hub id)")
    if not _HUB_ID.match(text):
        raise ModelNotFoundError(_not_found(text))
    import huggingface_hub

    try:
        return huggingface_hub.snapshot_download(text, revision=revision, cache_dir=cache_dir,
                                                 token=token, allow_patterns=_HUB_PATTERNS)
    except Exception as e:
        why = _hub_unavailable(e)
        if why is None:
            raise  # e.g. a gated repository or a bad token: as the hub says it
        raise ModelNotFoundError(f"{_not_found(text)}; not fetched from the hub either: "
                                 f"{why}") from e


def _hub_unavailable(error: BaseException) -> str | None:
    """Why the hub could not supply a repository (offline, unreachable, no such repository),
    or None for any other error. By class names along the error and its cause, so that
    huggingface_hub's versions (requests, httpx) read alike."""
    names = {c.__name__ for e in (error, error.__cause__) if e is not None
             for c in type(e).__mro__}
    if "GatedRepoError" in names:
        return None
    if "OfflineModeIsEnabled" in names:
        return "the hub is offline (HF_HUB_OFFLINE) and holds no cached copy"
    if names & {"LocalEntryNotFoundError", "ConnectionError", "TimeoutError", "ConnectError",
                "TimeoutException", "TransportError"}:
        return f"the hub could not be reached ({type(error.__cause__ or error).__name__})"
    if "RepositoryNotFoundError" in names:
        return "the hub has no such repository (or it is private: log in)"
    return None


def _not_found(path: str) -> str:
    """``model folder not found: X (closest: Y)``: Y the existing folder most like the first
    missing part of X among its siblings (difflib), when one is close enough."""
    missing = Path(os.path.normpath(path))
    while missing.parent != missing and not missing.parent.is_dir():
        missing = missing.parent
    try:
        with os.scandir(missing.parent) as entries:  # 10,000 names at most: cheap anywhere
            names = [e.name for _, e in zip(range(10_000), entries)
                     if not e.name.startswith(".") and e.is_dir()]
    except OSError:
        names = []
    close = difflib.get_close_matches(missing.name, names, n=1)
    if not close:
        return f"model folder not found: {path}"
    near = close[0] if str(missing.parent) == "." else str(missing.parent / close[0])
    return f"model folder not found: {path} (closest: {near})"


def open_model(path_or_id, *, step: int | None = None, revision: str | None = None,
               cache_dir: str | None = None, token=None, float32: bool = True) -> Checkpoint:
    """Load any model source (see the module docstring); params are float32 unless asked not.

    ``step`` applies to run folders only; asking for it elsewhere is an error.
    """
    folder = resolve_folder(path_or_id, revision=revision, cache_dir=cache_dir, token=token)
    if is_run_folder(folder):
        config, params, meta, tok_folder, step = load_run_params(folder, step)
        meta = meta.within(config.max_position_embeddings, tok_folder)
        return Checkpoint(config, params, meta, tok_folder, "run", step)
    if step is not None:
        raise TarkaError(f"a step applies to training run folders; {folder} is a model folder")
    if is_flax_folder(folder):
        config, params = load_flax_folder(folder)
        kind = "flax"
    else:
        config, params = load_hf_folder(folder)
        kind = "hf"
    if float32:
        params = {k: _to_float32(v) for k, v in params.items()}
    meta = SentenceTransformerMeta.from_folder(folder).within(config.max_position_embeddings,
                                                              folder)
    return Checkpoint(config, params, meta, folder, kind)


def _to_float32(tree):
    if isinstance(tree, dict):
        return {k: _to_float32(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)

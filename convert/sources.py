"""What a model argument names, decided in one place: :func:`open_model`.

A model is one of:

* ``builtin:NAME`` — a model shipped inside the package (``tarka_jax/models/NAME``);
* a tarka-jax Flax folder (``tarka_jax_config.json``, written by ``hf_to_flax``);
* a distillation run folder (``run.json``), read at ``step`` (default: the latest);
* a sentence-transformers / HF folder (``config.json``, ``model.safetensors``);
* a hub id ``owner/name``, fetched through huggingface_hub (honours ``HF_HUB_OFFLINE``
  and the cache). Hub errors (missing repo, auth, offline) reach the caller as
  huggingface_hub raises them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
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


def resolve_folder(path_or_id: str | os.PathLike, *, revision: str | None = None,
                   cache_dir: str | None = None, token: str | bool | None = None) -> str:
    """A local folder for a path, ``builtin:NAME`` or hub id.

    A string that names an existing folder is used as is. One that looks like a
    path (``./x``, ``/x``, ``~``, several slashes) but does not exist is a
    FileNotFoundError; anything else of the form ``owner/name`` is fetched.
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
        raise FileNotFoundError(f"model folder not found: {text}")
    from huggingface_hub import snapshot_download

    return snapshot_download(text, revision=revision, cache_dir=cache_dir, token=token,
                             allow_patterns=_HUB_PATTERNS)


def open_model(path_or_id, *, step: int | None = None, revision: str | None = None,
               cache_dir: str | None = None, token=None, float32: bool = True) -> Checkpoint:
    """Load any model source (see the module docstring); params are float32 unless asked not.

    ``step`` applies to run folders only; asking for it elsewhere is an error.
    """
    folder = resolve_folder(path_or_id, revision=revision, cache_dir=cache_dir, token=token)
    if is_run_folder(folder):
        config, params, meta, tok_folder, step = load_run_params(folder, step)
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
    return Checkpoint(config, params, SentenceTransformerMeta.from_folder(folder), folder, kind)


def _to_float32(tree):
    if isinstance(tree, dict):
        return {k: _to_float32(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)

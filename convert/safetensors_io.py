"""safetensors files: single and sharded reading, writing, storage dtypes, Flax-path keys.

Only safetensors are read: pickled ``pytorch_model.bin`` files run code on load.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import jax
import numpy as np

from tarka_jax.convert.mapping import CheckpointMismatch
from tarka_jax.errors import TarkaError
from tarka_jax.files.inside import inside
from tarka_jax.files.jsonfiles import read_json

STORAGE_DTYPES = ("keep", "float32", "bfloat16")


class StoredTensor:
    """One tensor of an open safetensors file, read when numpy asks for it (``np.asarray``).

    Why lazy: the model loader reads a tensor, transposes it to Flax layout and drops the
    source before reading the next, so the source copy stays in cache and its memory is
    reused. Reading every tensor first and transposing afterwards touched ~400 MB of fresh
    pages twice: a full-size load 1.0-1.3 s -> 0.8 s here (BENCHMARKS.md, first embedding).
    Valid only inside the :func:`open_safetensors_folder` block that made it.
    """

    def __init__(self, handle, key: str, path: str):
        self._handle, self.key, self.path = handle, key, path

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        from safetensors import SafetensorError

        try:
            array = self._handle.get_tensor(self.key)
        except (SafetensorError, OSError, ValueError) as e:  # e.g. "File is closed"
            raise CheckpointMismatch(f"cannot read tensor {self.key!r} of {self.path} ({e})") from None
        return array if dtype is None else array.astype(dtype, copy=False)


@contextlib.contextmanager
def _open_file(path: str):
    """An open safetensors file; a truncated or corrupt one is a CheckpointMismatch naming it."""
    from safetensors import SafetensorError, safe_open

    if not os.path.exists(path):
        raise FileNotFoundError(f"safetensors file not found: {path}")
    try:
        handle = safe_open(path, framework="np")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointMismatch(f"cannot read {path}: it is truncated or corrupt ({e})") from None
    with handle:
        yield handle


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Read one safetensors file; a truncated or corrupt file is an error naming it."""
    with _open_file(path) as handle:
        return {key: np.asarray(StoredTensor(handle, key, path)) for key in handle.keys()}


def _folder_files(folder: str, stem: str) -> tuple[list[str], set[str] | None]:
    """The files holding ``{stem}``'s tensors, and the keys its shard index lists (None: one file)."""
    single = os.path.join(folder, f"{stem}.safetensors")
    index = os.path.join(folder, f"{stem}.safetensors.index.json")
    if os.path.exists(single):
        return [single], None
    if os.path.exists(index):
        weight_map = read_json(index)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointMismatch(f"{index} has no weight_map")
        shards = {inside(folder, shard, f"{os.path.basename(index)} weight_map[{key!r:.80}]")
                  for key, shard in weight_map.items()}  # never a file outside the folder
        return sorted(shards), set(weight_map)
    if any(os.path.exists(os.path.join(folder, n)) for n in ("pytorch_model.bin", f"{stem}.bin")):
        raise CheckpointMismatch(
            f"{folder} holds only pytorch_model.bin; tarka-jax reads safetensors only. Convert it "
            "once with transformers (model.save_pretrained(out, safe_serialization=True)).")
    raise FileNotFoundError(f"no {stem}.safetensors (or sharded index) in {folder}")


@contextlib.contextmanager
def open_safetensors_folder(folder: str, stem: str) -> Iterator[dict[str, StoredTensor]]:
    """``{key: StoredTensor}`` of ``{stem}.safetensors`` or of its shards, readable in the block.

    Nothing is read until a tensor is asked for (``np.asarray``); the shards of an index
    must hold exactly the tensors it lists.
    """
    paths, listed = _folder_files(folder, stem)
    with contextlib.ExitStack() as files:
        tensors: dict[str, StoredTensor] = {}
        for path in paths:
            handle = files.enter_context(_open_file(path))
            tensors.update({key: StoredTensor(handle, key, path) for key in handle.keys()})
        if listed is not None and listed != set(tensors):
            present, index = set(tensors), os.path.join(folder, f"{stem}.safetensors.index.json")
            raise CheckpointMismatch(
                f"{index}: shards hold {sorted(present - listed)[:5]} not in the index and lack "
                f"{sorted(listed - present)[:5]}")
        yield tensors


def read_safetensors_folder(folder: str, stem: str) -> dict[str, np.ndarray]:
    """All tensors of ``{stem}.safetensors`` or of its shards (``{stem}.safetensors.index.json``)."""
    with open_safetensors_folder(folder, stem) as stored:
        return {key: np.asarray(tensor) for key, tensor in stored.items()}


def write_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
    """Write one safetensors file (metadata ``format: pt``, which transformers expects)."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path,
              metadata={"format": "pt"})


def cast(array: np.ndarray, dtype: str) -> np.ndarray:
    """A contiguous copy in the storage dtype ``"keep"``, ``"float32"`` or ``"bfloat16"``."""
    if dtype == "keep":
        return np.ascontiguousarray(array)
    if dtype == "float32":
        return np.ascontiguousarray(array, dtype=np.float32)
    if dtype == "bfloat16":
        import ml_dtypes

        return np.ascontiguousarray(np.asarray(array, np.float32).astype(ml_dtypes.bfloat16))
    raise TarkaError(f"storage dtype must be one of {STORAGE_DTYPES}; got {dtype!r}")


def flatten_params(params) -> dict[str, np.ndarray]:
    """Param tree -> ``{"encoder/layers_0/mlp/up_proj/kernel": array}``."""
    return {"/".join(k.key for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
    """The inverse of :func:`flatten_params`."""
    params: dict = {}
    for key, value in flat.items():
        node = params
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return params

"""safetensors files: single and sharded reading, writing, storage dtypes, Flax-path keys.

Only safetensors are read: pickled ``pytorch_model.bin`` files run code on load.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from tarka_jax.convert.mapping import CheckpointMismatch
from tarka_jax.errors import TarkaError
from tarka_jax.textfiles import read_json

STORAGE_DTYPES = ("keep", "float32", "bfloat16")


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Read one safetensors file; a truncated or corrupt file is an error naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not os.path.exists(path):
        raise FileNotFoundError(f"safetensors file not found: {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointMismatch(f"cannot read {path}: it is truncated or corrupt ({e})") from None


def read_safetensors_folder(folder: str, stem: str) -> dict[str, np.ndarray]:
    """All tensors of ``{stem}.safetensors`` or of its shards (``{stem}.safetensors.index.json``)."""
    single = os.path.join(folder, f"{stem}.safetensors")
    index = os.path.join(folder, f"{stem}.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)
    if os.path.exists(index):
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointMismatch(f"{index} has no weight_map")
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(read_safetensors(os.path.join(folder, shard)))
        listed, present = set(weight_map), set(tensors)
        if listed != present:
            raise CheckpointMismatch(
                f"{index}: shards hold {sorted(present - listed)[:5]} not in the index and lack "
                f"{sorted(listed - present)[:5]}")
        return tensors
    if any(os.path.exists(os.path.join(folder, n)) for n in ("pytorch_model.bin", f"{stem}.bin")):
        raise CheckpointMismatch(
            f"{folder} holds only pytorch_model.bin; tarka-jax reads safetensors only. Convert it "
            "once with transformers (model.save_pretrained(out, safe_serialization=True)).")
    raise FileNotFoundError(f"no {stem}.safetensors (or sharded index) in {folder}")


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

"""safetensors files: single and sharded reading, writing, storage dtypes, Flax-path keys.

Only safetensors are read: pickled ``pytorch_model.bin`` files run code on load. Reading
parses the format itself (8 bytes of header length, a JSON header, the tensors' bytes) with
the safetensors library's checks, because its Python API hands back only new arrays of its
own: no aligned destination JAX can adopt, no transposing on the way in, so a second full
copy at load (BENCHMARKS.md, "Loading the real model"). Writing uses the library.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
from collections.abc import Iterator
from typing import NamedTuple

import jax
import ml_dtypes
import numpy as np

from tarka_jax.convert.mapping import TRANSPOSE_ROWS, CheckpointMismatch
from tarka_jax.errors import TarkaError
from tarka_jax.files.inside import inside
from tarka_jax.files.jsonfiles import check_regular, read_json

STORAGE_DTYPES = ("keep", "float32", "bfloat16")


class NonFiniteWeight(TarkaError):
    """A stored weight holds NaN or infinity: the checkpoint is refused, naming tensor and file."""


#: safetensors dtype string -> numpy dtype (BF16 through ml_dtypes, as jax uses it).
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64,
           "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}
_FLOATS = {np.dtype(_DTYPES[k]) for k in ("F64", "F32", "F16", "BF16")}
_MAX_HEADER = 100_000_000  # bytes; the safetensors library's own bound
_CHUNK = 8 << 20  # bytes read (and checked for NaN/inf) at a time: stays in the CPU's L3
_ALIGN = 64  # XLA:CPU adopts a host buffer without copying it only at this alignment
_MMAP_FROM = 4 << 20  # numpy advises huge pages from here on


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary.

    Why: ``jax.device_put`` on CPU adopts a 64-byte aligned numpy buffer instead of copying
    it, so a loaded model is placed without a second 1.2 GB copy. Arrays of 4 MiB and more
    are anonymous ``mmap`` regions (page aligned): numpy's own allocator asks for
    transparent huge pages from that size on, whose first touch ran ~3x slower in the dev VM
    (0.35 vs 1.2 GB/s, BENCHMARKS.md "Loading the real model").
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes >= _MMAP_FROM:
        raw = np.frombuffer(mmap.mmap(-1, nbytes), np.uint8)
    else:
        buffer = np.empty(nbytes + _ALIGN, np.uint8)
        start = -buffer.ctypes.data % _ALIGN
        raw = buffer[start:start + nbytes]
    return raw.view(dtype).reshape(shape)


class _Entry(NamedTuple):
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int


def read_header(path: str) -> dict[str, _Entry]:
    """The tensors a safetensors file lists, every offset checked against the file's size.

    The checks are the safetensors library's (bounded header, known dtypes, sizes equal to
    shape x itemsize, tensors that tile the data without gap or overlap, a data size equal
    to the file's): a truncated or corrupt file is a CheckpointMismatch naming it before
    anything is allocated.
    """
    def corrupt(why: str) -> CheckpointMismatch:
        return CheckpointMismatch(f"cannot read {path}: it is truncated or corrupt ({why})")

    check_regular(path, "safetensors file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise corrupt("shorter than its 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > min(_MAX_HEADER, size - 8):
            raise corrupt(f"header length {n} does not fit the file's {size} bytes")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise corrupt(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    entries, base = {}, 8 + n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape, offsets = tuple(info["shape"]), tuple(info["data_offsets"])
        except (KeyError, TypeError):
            raise corrupt(f"tensor {key!r} has a bad entry {str(info)[:80]}") from None
        if len(offsets) != 2 or not all(type(x) is int for x in shape + offsets):
            raise corrupt(f"tensor {key!r} has a bad entry {str(info)[:80]}")
        begin, end = offsets
        if min(shape, default=0) < 0 or end - begin != math.prod(shape) * dtype.itemsize:
            raise corrupt(f"tensor {key!r}: offsets {begin}..{end} do not hold shape {shape}")
        entries[key] = _Entry(dtype, shape, base + begin, base + end)
    position = base
    for key, entry in sorted(entries.items(), key=lambda item: item[1].begin):
        if entry.begin != position:
            raise corrupt(f"tensor {key!r} starts at byte {entry.begin}, expected {position}")
        position = entry.end
    if position != size:
        raise corrupt(f"the tensors end at byte {position} of {size}")
    return entries


class StoredTensor:
    """One tensor of an open safetensors file, read when asked (:meth:`read`, ``np.asarray``).

    Why lazy, and why read it ourselves: the model loader takes one tensor at a time, so
    nothing but its destination is allocated. The bytes go straight from the page cache
    into a 64-byte aligned array (which ``jax.device_put`` on CPU then adopts), checked for
    NaN / inf a chunk at a time while the chunk is in cache; a kernel stored ``[out, in]``
    is read in bands of rows, each transposed into its ``[in, out]`` destination. Every
    fresh page costs a fault in the dev VM: the real 1.2 GB load went from ~10 s to ~1.3 s
    (BENCHMARKS.md, "Loading the real model").
    Valid only inside the :func:`open_safetensors_folder` block that made it.
    """

    def __init__(self, file, key: str, path: str, entry: _Entry):
        self._file, self.key, self.path, self._entry = file, key, path, entry
        self.shape, self.dtype = entry.shape, entry.dtype

    def read(self, *, transpose: bool = False) -> np.ndarray:
        """The tensor as a new aligned array; ``transpose``: a 2-D tensor as its ``.T``.

        Raises:
          NonFiniteWeight: a floating-point tensor holds NaN or infinity.
          CheckpointMismatch: the file was closed, or shrank since it was opened.
        """
        if transpose and len(self.shape) == 2:
            return self._read_transposed()
        out = aligned_empty(self.shape, self.dtype)
        flat = out.reshape(-1)
        step = max(1, _CHUNK // self.dtype.itemsize)
        for start in range(0, flat.size, step):
            self._read_into(flat[start:start + step], start * self.dtype.itemsize)
        return np.ascontiguousarray(out.T) if transpose and out.ndim > 2 else out

    def _read_transposed(self) -> np.ndarray:
        rows, cols = self.shape
        out = aligned_empty((cols, rows), self.dtype)
        band = np.empty((min(rows, TRANSPOSE_ROWS), cols), self.dtype)
        for start in range(0, rows, TRANSPOSE_ROWS):
            stop = min(start + TRANSPOSE_ROWS, rows)
            part = band[:stop - start]
            self._read_into(part, start * cols * self.dtype.itemsize)
            out[:, start:stop] = part.T
        return out

    def _read_into(self, out: np.ndarray, offset: int) -> None:
        """Fill the contiguous ``out`` from ``offset`` bytes into this tensor; check it is finite."""
        if self._file.closed:
            raise CheckpointMismatch(f"cannot read tensor {self.key!r} of {self.path} (the file "
                                     "is closed: read it inside its open_safetensors_folder block)")
        view = memoryview(out.reshape(-1).view(np.uint8))
        self._file.seek(self._entry.begin + offset)
        got = 0
        while got < len(view):  # readinto may return fewer bytes; 0 is the file's end
            n = self._file.readinto(view[got:])
            if not n:
                raise CheckpointMismatch(f"cannot read tensor {self.key!r} of {self.path}: the "
                                         "file shrank since it was opened")
            got += n
        if self.dtype in _FLOATS:
            _check_finite(out, self.key, self.path)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.read()
        return array if dtype is None else array.astype(dtype, copy=False)


def _check_finite(values: np.ndarray, key: str, path: str) -> None:
    if np.isfinite(values).all():
        return
    bad = ~np.isfinite(values)
    nan = int(np.isnan(values[bad]).sum())
    raise NonFiniteWeight(
        f"{path}: tensor {key!r} holds {nan} NaN and {int(bad.sum()) - nan} infinite value(s); "
        "a model with non-finite weights gives NaN embeddings, so it is not loaded")


@contextlib.contextmanager
def _open_file(path: str):
    """``{key: StoredTensor}`` of one file, readable in the block; its header is checked first."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"safetensors file not found: {path}")
    entries = read_header(path)
    with open(path, "rb", buffering=0) as f:
        yield {key: StoredTensor(f, key, path, entry) for key, entry in entries.items()}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Read one safetensors file; a truncated or corrupt file or a NaN weight is an error naming it."""
    with _open_file(path) as stored:
        return {key: tensor.read() for key, tensor in stored.items()}


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

    Nothing is read until a tensor is asked for (:meth:`StoredTensor.read`); the shards of an
    index must hold exactly the tensors it lists.
    """
    paths, listed = _folder_files(folder, stem)
    with contextlib.ExitStack() as files:
        tensors: dict[str, StoredTensor] = {}
        for path in paths:
            tensors.update(files.enter_context(_open_file(path)))
        if listed is not None and listed != set(tensors):
            present, index = set(tensors), os.path.join(folder, f"{stem}.safetensors.index.json")
            raise CheckpointMismatch(
                f"{index}: shards hold {sorted(present - listed)[:5]} not in the index and lack "
                f"{sorted(listed - present)[:5]}")
        yield tensors


def read_safetensors_folder(folder: str, stem: str) -> dict[str, np.ndarray]:
    """All tensors of ``{stem}.safetensors`` or of its shards (``{stem}.safetensors.index.json``)."""
    with open_safetensors_folder(folder, stem) as stored:
        return {key: tensor.read() for key, tensor in stored.items()}


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

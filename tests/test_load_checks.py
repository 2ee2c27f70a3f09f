"""What the weight loader checks and how it reads: non-finite weights, hostile headers, bands.

Torch-free: the checkpoints are written here with ``safetensors.numpy`` (the model folder is
``jax_only_model``), so both CI legs run these.
"""

from __future__ import annotations

import json
import os
import shutil
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from tarka_jax.convert.mapping import CheckpointMismatch
from tarka_jax.convert.safetensors_io import (
    NonFiniteWeight,
    aligned_empty,
    open_safetensors_folder,
    read_safetensors,
)
from tarka_jax.errors import TarkaError


def _copy(src, tmp_path) -> str:
    dst = str(tmp_path / "model")
    shutil.copytree(src, dst)
    return dst


def _poison(path: str, key: str, value: float, index=(0,)) -> None:
    tensors = read_safetensors(path)
    tensors[key] = tensors[key].copy()
    tensors[key][index] = value
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize("value, what", [(np.nan, "1 NaN and 0 infinite"),
                                         (-np.inf, "0 NaN and 1 infinite")])
def test_non_finite_weight_is_refused_naming_tensor_and_file(jax_only_model, tmp_path, value,
                                                             what):
    from tarka_jax import Embedder

    folder = _copy(jax_only_model, tmp_path)
    path = os.path.join(folder, "model.safetensors")
    _poison(path, "layers.1.mlp.down_proj.weight", value, (3, 5))
    with pytest.raises(NonFiniteWeight) as caught:
        Embedder.from_pretrained(folder)
    message = str(caught.value)
    assert isinstance(caught.value, TarkaError) and "\n" not in message
    assert "'layers.1.mlp.down_proj.weight'" in message and path in message and what in message


def test_non_finite_weight_of_a_dense_module_names_its_file(jax_only_model, tmp_path):
    from tarka_jax.convert import open_model

    folder = _copy(jax_only_model, tmp_path)
    dense = os.path.join(folder, "2_Dense", "model.safetensors")
    _poison(dense, "linear.weight", np.inf, (2, 1))
    with pytest.raises(NonFiniteWeight,
                       match=r"2_Dense/model.safetensors: tensor 'linear.weight' holds 0 NaN and 1 inf"):
        open_model(folder)


def test_cli_prints_the_non_finite_weight_in_one_line(jax_only_model, tmp_path, capsys):
    from tarka_jax.cli import main

    folder = _copy(jax_only_model, tmp_path)
    _poison(os.path.join(folder, "model.safetensors"), "norm.weight", np.nan)
    assert main(["embed", "--model", folder, "a text"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'norm.weight'" in err and "NaN" in err


def _write_raw(path: str, header: dict, data: bytes) -> str:
    body = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body)) + body + data)
    return path


@pytest.mark.parametrize("header, data, why", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "end at byte"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}, b"\0" * 12, "do not hold"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "starts at byte"),
    ({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "bad entry"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "do not hold"),
    ({"a": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}}, b"\0" * 4, "bad entry"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, b"\0" * 4, "bad entry"),
    ([1, 2], b"", "not a JSON object"),
])
def test_hostile_headers_are_refused_before_any_allocation(tmp_path, header, data, why):
    path = _write_raw(str(tmp_path / "x.safetensors"), header, data)
    with pytest.raises(CheckpointMismatch, match=f"x.safetensors: it is truncated or corrupt.*{why}"):
        read_safetensors(path)


def test_huge_header_length_is_refused(tmp_path):
    path = str(tmp_path / "x.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 1 << 60) + b"{}")
    with pytest.raises(CheckpointMismatch, match="header length"):
        read_safetensors(path)


def test_a_file_that_shrinks_after_opening_is_named(tmp_path):
    path = str(tmp_path / "x.safetensors")
    save_file({"w": np.ones((300, 40), np.float32)}, path)
    with open_safetensors_folder(str(tmp_path), "x") as stored:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 100)
        with pytest.raises(CheckpointMismatch, match="'w' of .*x.safetensors: the file shrank"):
            stored["w"].read()


@pytest.mark.parametrize("shape", [(1, 5), (63, 7), (64, 3), (65, 130), (200, 33)])
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_stored_tensor_reads_transposed_in_bands(tmp_path, shape, dtype):
    rng = np.random.default_rng(sum(shape))
    matrix = rng.standard_normal(shape).astype(dtype)
    save_file({"w": matrix, "v": matrix[0].copy()}, str(tmp_path / "x.safetensors"))
    with open_safetensors_folder(str(tmp_path), "x") as stored:
        out = stored["w"].read(transpose=True)
        vector = stored["v"].read(transpose=True)
    assert out.flags.c_contiguous and out.dtype == matrix.dtype
    np.testing.assert_array_equal(out, matrix.T)
    np.testing.assert_array_equal(vector, matrix[0])


@pytest.mark.parametrize("shape", [(3,), (5, 7), (1024, 1100)])  # numpy- and mmap-backed
def test_loaded_arrays_are_aligned_so_jax_adopts_them_on_cpu(shape):
    """Why the loader aligns: on CPU, ``device_put`` then adopts the buffer instead of copying
    1.2 GB again. (Aliasing is XLA:CPU's choice; this pins that our arrays allow it.)"""
    import jax

    array = aligned_empty(shape, np.float32)
    array[...] = 1.5
    assert array.ctypes.data % 64 == 0 and array.flags.c_contiguous and array.flags.writeable
    placed = jax.device_put(array, jax.devices("cpu")[0])
    if array.nbytes >= 64:
        assert placed.unsafe_buffer_pointer() == array.ctypes.data
    assert float(placed.sum()) == 1.5 * array.size

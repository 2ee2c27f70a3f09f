"""Converters: HF -> Flax -> HF round trips, strictness, and every load-time error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tarka_jax.convert import open_model
from tarka_jax.convert.flax_to_hf import flax_to_hf
from tarka_jax.convert.hf_to_flax import hf_to_flax
from tarka_jax.convert.mapping import CheckpointMismatch, transpose
from tarka_jax.convert.safetensors_io import read_safetensors
from tarka_jax.nn.config import ConfigError
from tarka_jax.testing.reference import SAMPLE_TEXTS, long_text

pytestmark = pytest.mark.torch
TEXTS = list(SAMPLE_TEXTS) + [long_text(40, 5)]


def _copy(src, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return str(dst)


def _flat(params):
    import jax

    return {"/".join(k.key for k in p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_hf_to_flax_to_hf_round_trip_loads_in_sentence_transformers(tiny_reference, tiny_st,
                                                                     tmp_path):
    from sentence_transformers import SentenceTransformer

    flax_dir = hf_to_flax(tiny_reference, str(tmp_path / "flax"))
    direct, via_flax = open_model(tiny_reference), open_model(flax_dir)
    assert direct.config == via_flax.config
    assert via_flax.meta == direct.meta
    a, b = _flat(direct.params), _flat(via_flax.params)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    hf_dir = flax_to_hf(flax_dir, str(tmp_path / "hf"))
    back = SentenceTransformer(hf_dir, device="cpu")
    for method in ("encode", "encode_query", "encode_document"):
        ref = getattr(tiny_st, method)(TEXTS)
        out = getattr(back, method)(TEXTS)
        assert np.abs(out - ref).max() <= 1e-6, method
    assert back.prompts == tiny_st.prompts
    assert back.max_seq_length == tiny_st.max_seq_length
    # Tensors round-trip bit for bit.
    src, dst = read_safetensors(os.path.join(tiny_reference, "model.safetensors")), \
        read_safetensors(os.path.join(hf_dir, "model.safetensors"))
    assert src.keys() == dst.keys() and all(np.array_equal(src[k], dst[k]) for k in src)


def test_bfloat16_storage_round_trip(tiny_reference, tmp_path):
    flax_dir = hf_to_flax(tiny_reference, str(tmp_path / "flax"), dtype="bfloat16")
    stored = read_safetensors(os.path.join(flax_dir, "flax_params.safetensors"))
    assert {v.dtype.name for v in stored.values()} == {"bfloat16"}
    hf_dir = flax_to_hf(flax_dir, str(tmp_path / "hf"))  # keep: stays bfloat16
    assert json.load(open(os.path.join(hf_dir, "config.json")))["dtype"] == "bfloat16"
    reloaded = open_model(hf_dir)  # a bf16 HF folder loads too, as float32 params
    original = _flat(open_model(tiny_reference).params)
    for k, v in _flat(reloaded.params).items():
        assert v.dtype == np.float32
        np.testing.assert_allclose(v, original[k], rtol=1e-2, atol=1e-2)


def _shard(folder) -> list[str]:
    """Split the folder's model.safetensors into two shards and an index; the shard paths."""
    from safetensors.numpy import save_file

    tensors = read_safetensors(os.path.join(folder, "model.safetensors"))
    os.remove(os.path.join(folder, "model.safetensors"))
    keys = sorted(tensors)
    weight_map, paths = {}, []
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        paths.append(os.path.join(folder, name))
        save_file({k: tensors[k] for k in part}, paths[-1])
        weight_map.update({k: name for k in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return paths


def test_sharded_checkpoint_loads(tiny_reference, tmp_path):
    folder = _copy(tiny_reference, tmp_path)
    _shard(folder)
    a, b = _flat(open_model(folder).params), _flat(open_model(tiny_reference).params)
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_truncated_shard_names_the_shard(tiny_reference, tmp_path):
    folder = _copy(tiny_reference, tmp_path)
    second = _shard(folder)[1]
    with open(second, "r+b") as f:
        f.truncate(os.path.getsize(second) - 16)
    with pytest.raises(CheckpointMismatch, match="model-00002-of-00002.safetensors.*truncated"):
        open_model(folder)


def test_stored_tensor_read_after_its_block_names_the_tensor(tiny_reference):
    from tarka_jax.convert.safetensors_io import open_safetensors_folder

    with open_safetensors_folder(tiny_reference, "model") as stored:
        key = sorted(stored)[0]
        inside = np.asarray(stored[key])
    assert np.array_equal(inside, read_safetensors(os.path.join(tiny_reference, "model.safetensors"))[key])
    with pytest.raises(CheckpointMismatch, match=f"tensor '{re.escape(key)}' of .*model.safetensors"):
        np.asarray(stored[key])


def test_converter_clis_run_as_scripts_and_modules(tiny_reference, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out1, out2 = str(tmp_path / "a"), str(tmp_path / "b")
    subprocess.run([sys.executable, os.path.join(root, "convert", "hf_to_flax.py"),
                    tiny_reference, out1], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "tarka_jax.convert.flax_to_hf", out1, out2],
                   check=True, capture_output=True)
    assert os.path.exists(os.path.join(out2, "modules.json"))
    again = subprocess.run([sys.executable, "-m", "tarka_jax.convert.flax_to_hf", out1, out2],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr


# ---- strictness and errors ------------------------------------------------------------------


def _rewrite_backbone(folder, edit):
    from safetensors.numpy import save_file

    path = os.path.join(folder, "model.safetensors")
    tensors = read_safetensors(path)
    edit(tensors)
    save_file(tensors, path)


@pytest.mark.parametrize("shape", [(1, 5), (63, 7), (64, 3), (65, 130), (1152, 768), (768, 3072)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_banded_transpose_equals_numpy_transpose(shape, dtype):
    import ml_dtypes

    rng = np.random.default_rng(sum(shape))
    matrix = rng.standard_normal(shape).astype(getattr(ml_dtypes, dtype, dtype))
    out = transpose(matrix)
    assert out.flags.c_contiguous and out.dtype == matrix.dtype
    np.testing.assert_array_equal(out, matrix.T)


def test_missing_tensor_is_named(tiny_reference, tmp_path):
    folder = _copy(tiny_reference, tmp_path)
    _rewrite_backbone(folder, lambda t: t.pop("layers.1.self_attn.k_norm.weight"))
    with pytest.raises(CheckpointMismatch, match=r"missing 1 tensor.*layers\.1\.self_attn\.k_norm"):
        open_model(folder)


def test_unexpected_tensor_is_named(tiny_reference, tmp_path):
    folder = _copy(tiny_reference, tmp_path)
    _rewrite_backbone(folder, lambda t: t.__setitem__("lm_head.weight", np.zeros((2, 2), np.float32)))
    with pytest.raises(CheckpointMismatch, match="unexpected 1 tensor.*lm_head.weight"):
        open_model(folder)


def test_misshaped_tensor_is_named(tiny_reference, tmp_path):
    folder = _copy(tiny_reference, tmp_path)

    def transpose(t):
        t["layers.0.mlp.up_proj.weight"] = np.ascontiguousarray(t["layers.0.mlp.up_proj.weight"].T)

    _rewrite_backbone(folder, transpose)
    with pytest.raises(CheckpointMismatch, match=r"layers\.0\.mlp\.up_proj\.weight.*shape"):
        open_model(folder)


def test_misshaped_dense_tensor_is_named(tiny_reference, tmp_path):
    from safetensors.numpy import save_file

    folder = _copy(tiny_reference, tmp_path)
    save_file({"linear.weight": np.zeros((5, 5), np.float32)},
              os.path.join(folder, "3_Dense", "model.safetensors"))
    with pytest.raises(CheckpointMismatch, match=r"dense_1\.linear\.weight"):
        open_model(folder)


def test_truncated_safetensors_names_the_file(tiny_reference, tmp_path):
    folder = _copy(tiny_reference, tmp_path)
    path = os.path.join(folder, "model.safetensors")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointMismatch, match="model.safetensors.*truncated or corrupt"):
        open_model(folder)


def test_pytorch_bin_only_is_refused(tiny_reference, tmp_path):
    folder = _copy(tiny_reference, tmp_path)
    os.replace(os.path.join(folder, "model.safetensors"), os.path.join(folder, "pytorch_model.bin"))
    with pytest.raises(CheckpointMismatch, match="pytorch_model.bin"):
        open_model(folder)


def test_corrupt_config_is_named(tiny_reference, tmp_path):
    folder = _copy(tiny_reference, tmp_path)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write('{"model_type": "gemma3_text", ')
    with pytest.raises(ConfigError, match="config.json.*not valid JSON"):
        open_model(folder)


@pytest.mark.parametrize("edit, message", [
    ({"use_bidirectional_attention": False}, "causal"),
    ({"attn_logit_softcapping": 50.0}, "soft-capping"),
    ({"model_type": "bert"}, "model_type 'bert'"),
])
def test_unservable_configs_are_refused(tiny_reference, tmp_path, edit, message):
    folder = _copy(tiny_reference, tmp_path)
    path = os.path.join(folder, "config.json")
    config = json.load(open(path))
    config.update(edit)
    json.dump(config, open(path, "w"))
    with pytest.raises(ConfigError, match=message):
        open_model(folder)


def test_non_mean_pooling_is_refused(tiny_reference, tmp_path):
    folder = _copy(tiny_reference, tmp_path)
    path = os.path.join(folder, "1_Pooling", "config.json")
    config = json.load(open(path))
    config["pooling_mode"] = "cls"
    json.dump(config, open(path, "w"))
    with pytest.raises(ConfigError, match="only mean pooling"):
        open_model(folder)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        open_model(str(tmp_path / "does" / "not" / "exist"))

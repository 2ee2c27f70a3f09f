"""A model folder stays inside itself (issue 26, item 2): paths named in its files are checked.

modules.json entries' ``path`` and a sharded index's ``weight_map`` must be relative, without
``..``, lexically inside the folder; files and folders that are symbolic links keep loading
(the hub cache is built of them). Malformed modules.json is one line, not a traceback.
Torch-free: the JAX-written ``jax_only_model``; nothing here compiles.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tarka_jax.cli import main
from tarka_jax.convert import open_model
from tarka_jax.convert.hf_to_flax import main as hf_to_flax_main
from tarka_jax.errors import ConfigError
from tarka_jax.files.inside import FolderPathError


def _copy(src: str, tmp_path, name: str = "model") -> str:
    out = str(tmp_path / name)
    shutil.copytree(src, out)
    return out


def _edit_modules(folder: str, index: int, **changes) -> None:
    path = os.path.join(folder, "modules.json")
    modules = json.load(open(path))
    modules[index].update(changes)
    json.dump(modules, open(path, "w"))


def _shard(folder: str) -> list[str]:
    """Split model.safetensors into two shards + index (transformers' layout)."""
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    os.remove(os.path.join(folder, "model.safetensors"))
    keys = sorted(tensors)
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for name, part in zip(names, (keys[: len(keys) // 2], keys[len(keys) // 2:])):
        save_file({k: tensors[k] for k in part}, os.path.join(folder, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    json.dump({"metadata": {}, "weight_map": weight_map},
              open(os.path.join(folder, "model.safetensors.index.json"), "w"))
    return names


def _same_params(a, b) -> None:
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    assert a.config == b.config


def _outside_dense(src: str, tmp_path) -> str:
    """A valid Dense module folder outside the model: what a hostile path would reach."""
    outside = str(tmp_path / "outside")
    shutil.copytree(os.path.join(src, "2_Dense"), outside)
    return outside


@pytest.mark.parametrize("path", ["../outside", "ABS", "2_Dense/../../outside", "..\\outside"])
def test_a_module_path_leaving_the_folder_is_refused(jax_only_model, tmp_path, capsys, path):
    folder = _copy(jax_only_model, tmp_path)
    outside = _outside_dense(jax_only_model, tmp_path)
    _edit_modules(folder, 2, path=outside if path == "ABS" else path)
    with pytest.raises(FolderPathError, match=r"modules.json entry 2 'path'"):
        open_model(folder)
    # the converter copied what the path reached into its output before: now nothing is written
    out = str(tmp_path / "flax")
    assert hf_to_flax_main([folder, out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "modules.json entry 2 'path'" in err, err
    assert not os.path.exists(out)


@pytest.mark.parametrize("shard", ["../w.safetensors", "/etc/passwd", "sub/../../w.safetensors"])
def test_a_shard_index_naming_a_file_outside_is_refused(jax_only_model, tmp_path, capsys, shard):
    folder = _copy(jax_only_model, tmp_path)
    names = _shard(folder)
    shutil.copy(os.path.join(folder, names[1]), tmp_path / "w.safetensors")
    index_path = os.path.join(folder, "model.safetensors.index.json")
    index = json.load(open(index_path))
    key = next(k for k, v in index["weight_map"].items() if v == names[1])
    index["weight_map"] = {k: (shard if v == names[1] else v) for k, v in index["weight_map"].items()}
    json.dump(index, open(index_path, "w"))
    with pytest.raises(FolderPathError, match=r"weight_map\[") as info:
        open_model(folder)
    assert shard in str(info.value) and "model.safetensors.index.json" in str(info.value)
    assert key in str(info.value) or "weight_map['" in str(info.value)
    assert hf_to_flax_main([folder, str(tmp_path / "flax")]) == 2
    assert "weight_map[" in capsys.readouterr().err


@pytest.mark.parametrize("modules, message", [
    (["a"], r"modules.json entry 0 .*must be an object"),
    ({"0": "Transformer"}, r"must be a non-empty list"),
    ([], r"must be a non-empty list"),
    ([{"type": 7, "path": ""}], r"entry 0 .*needs a string 'type'"),
    ([{"type": "sentence_transformers.models.Transformer", "idx": "zero"}], r"integer 'idx'"),
    ([{"type": "sentence_transformers.models.Transformer", "path": 3}], r"entry 0 'path'.*string"),
])
def test_malformed_modules_json_is_one_line(jax_only_model, tmp_path, capsys, modules, message):
    folder = _copy(jax_only_model, tmp_path)
    json.dump(modules, open(os.path.join(folder, "modules.json"), "w"))
    with pytest.raises(ConfigError, match=message):
        open_model(folder)
    assert main(["embed", "-m", folder, "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tarka-jax embed: error: modules.json") and "\n" not in err, err
    assert "Traceback" not in err


def test_a_hub_cache_snapshot_of_symlinks_loads(jax_only_model, tmp_path, monkeypatch):
    """snapshots/<rev>/* are symlinks into ../../blobs/ (huggingface_hub's cache layout),
    sharded weights included: read as the original, by path and (offline) by hub id."""
    src = _copy(jax_only_model, tmp_path, "src")
    _shard(src)
    repo, rev = tmp_path / "hub" / "models--org--tiny", "0" * 40
    snapshot = repo / "snapshots" / rev
    for root, _, files in os.walk(src):
        for name in files:
            path = os.path.join(root, name)
            data = open(path, "rb").read()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = snapshot / os.path.relpath(path, src)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    assert os.path.islink(snapshot / "model-00001-of-00002.safetensors")
    reference = open_model(jax_only_model)
    _same_params(open_model(str(snapshot)), reference)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_id = open_model("org/tiny", cache_dir=str(tmp_path / "hub"))
    assert os.path.realpath(by_id.folder) == os.path.realpath(snapshot)
    _same_params(by_id, reference)


def test_a_module_folder_linked_to_shared_storage_loads(jax_only_model, tmp_path):
    folder = _copy(jax_only_model, tmp_path)
    shared = _outside_dense(jax_only_model, tmp_path)
    shutil.rmtree(os.path.join(folder, "2_Dense"))
    os.symlink(shared, os.path.join(folder, "2_Dense"))  # the name is inside; the link is ours
    _same_params(open_model(folder), open_model(jax_only_model))


@pytest.mark.parametrize("model", [{"vocab_size": 3}, ["not", "an object"],
                                   {"layer_types": "full", "dense": []}])
def test_a_malformed_flax_config_is_one_line(jax_only_model, tmp_path, capsys, model):
    from tarka_jax.convert.flax_folder import FLAX_CONFIG_FILE
    from tarka_jax.convert.hf_to_flax import hf_to_flax

    flax = str(tmp_path / "flax")
    hf_to_flax(jax_only_model, flax)
    path = os.path.join(flax, FLAX_CONFIG_FILE)
    meta = json.load(open(path))
    json.dump(dict(meta, model=model), open(path, "w"))
    with pytest.raises(ConfigError, match="tarka-jax model config"):
        open_model(flax)
    assert main(["embed", "-m", flax, "x"]) == 2
    assert "model config" in capsys.readouterr().err

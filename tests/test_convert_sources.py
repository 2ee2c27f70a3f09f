"""open_model and the converters on every kind of source, torch-free.

The shipped ``builtin:demo-mini`` (a sentence-transformers folder), a Flax folder
written by ``hf_to_flax``, and (in tests/test_distill_run.py) a run folder step
all export with ``flax_to_hf`` and give the same embeddings back (<= 1e-6: the
tensors are copied, not recomputed, so only float32 storage round trips).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tarka_jax import Embedder
from tarka_jax.convert import open_model
from tarka_jax.errors import TarkaError
from tarka_jax.testing.reference import SAMPLE_TEXTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILTIN = "builtin:demo-mini"
TEXTS = [t for t in SAMPLE_TEXTS if t]


def _embed(model) -> np.ndarray:
    return Embedder.from_pretrained(model).encode(TEXTS)


@pytest.fixture(scope="module")
def builtin_embeddings():
    return _embed(BUILTIN)


def test_open_model_tells_the_kinds_apart(tmp_path):
    from tarka_jax.convert.hf_to_flax import hf_to_flax

    ck = open_model(BUILTIN)
    assert ck.kind == "hf" and ck.step is None
    flax = hf_to_flax(BUILTIN, str(tmp_path / "flax"))
    assert open_model(flax).kind == "flax"
    with pytest.raises(TarkaError, match="step applies to training run folders"):
        open_model(flax, step=3)


def test_flax_to_hf_script_exports_the_shipped_model(tmp_path, builtin_embeddings):
    out = str(tmp_path / "st")
    subprocess.run([sys.executable, os.path.join(ROOT, "convert", "flax_to_hf.py"), BUILTIN, out],
                   check=True, capture_output=True)
    assert np.abs(_embed(out) - builtin_embeddings).max() <= 1e-6


def test_convert_subcommand_round_trips_through_a_flax_folder(tmp_path, builtin_embeddings,
                                                              capsys):
    from tarka_jax.cli import main

    flax, st = str(tmp_path / "flax"), str(tmp_path / "st")
    assert main(["convert", "hf-to-flax", BUILTIN, flax]) == 0
    assert main(["convert", "flax-to-hf", flax, st]) == 0
    assert f"wrote {st}" in capsys.readouterr().out
    assert np.abs(_embed(flax) - builtin_embeddings).max() <= 1e-6
    assert np.abs(_embed(st) - builtin_embeddings).max() <= 1e-6
    assert main(["convert", "flax-to-hf", flax, st]) == 2  # not empty, no --force
    assert "not empty" in capsys.readouterr().err


def test_hf_to_flax_runs_as_a_module(tmp_path):
    out = str(tmp_path / "flax")
    subprocess.run([sys.executable, "-m", "tarka_jax.convert.hf_to_flax", BUILTIN, out],
                   check=True, capture_output=True)
    assert open_model(out).kind == "flax"


def test_flax_folder_with_a_wrong_shape_is_refused_by_name(tmp_path):
    from safetensors.numpy import load_file, save_file

    from tarka_jax.convert.flax_folder import FLAX_PARAMS_FILE
    from tarka_jax.convert.hf_to_flax import hf_to_flax
    from tarka_jax.convert.mapping import CheckpointMismatch

    flax = hf_to_flax(BUILTIN, str(tmp_path / "flax"))
    path = os.path.join(flax, FLAX_PARAMS_FILE)
    tensors = load_file(path)
    key = "encoder/layers_0/mlp/up_proj/kernel"
    tensors[key] = np.ascontiguousarray(tensors[key].T)
    save_file(tensors, path)
    with pytest.raises(CheckpointMismatch, match="layers_0/mlp/up_proj/kernel has shape"):
        open_model(flax)


def test_hub_errors_stay_recognisable(monkeypatch):
    """Offline, a hub id that is not cached is "model folder not found" saying the hub is
    offline, with huggingface_hub's own error as the cause; an error that is not about
    reaching the hub (a gated repository, a bad token) passes through as the hub raised it."""
    import huggingface_hub

    from tarka_jax.convert.sources import ModelNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="offline") as info:
        open_model("tarka-jax-tests/no-such-model")
    assert type(info.value.__cause__).__module__.startswith("huggingface_hub")

    class GatedRepoError(Exception):
        pass

    def gated(*args, **kwargs):
        raise GatedRepoError("401: log in to access this repository")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(GatedRepoError):
        open_model("tarka-jax-tests/gated-model")

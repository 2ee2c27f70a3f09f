"""Errors a new user meets are one line naming the file, entry or option (issue 26, items 4, 7).

* the optional caches: ``TARKA_JAX_COMPILATION_CACHE`` naming a file, or a full disk, warn
  once and the command goes on;
* ``tarka-jax evaluate -m M --pairs FILE`` works with its documented format and no teacher;
* a model argument that is no folder and that the hub cannot supply is "model folder not
  found: X (closest: Y)"; ``org/name`` ids still come from the hub when it answers;
* a missing optional package names its ``pip install`` line.

Torch-free (``jax_only_model``); the hub is never contacted (HF_HUB_OFFLINE=1, and the
reachable hub is a monkeypatched ``snapshot_download``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tarka_jax.cli import main
from tarka_jax.runtime import compile_cache, program_cache


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tarka-jax {command}: error: ") and "\n" not in err, err
    return err


# ---- the optional caches -----------------------------------------------------------------


def test_a_cache_path_naming_a_file_warns_once_and_goes_on(jax_only_model, tmp_path, capsys,
                                                           monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    monkeypatch.setenv(compile_cache.ENV_VAR, str(afile))
    try:
        assert compile_cache.enable_compilation_cache() is None
        assert program_cache.active() is None
        assert main(["embed", "-m", jax_only_model, "hello"]) == 0  # enables it again: once
    finally:
        program_cache.disable()
    captured = capsys.readouterr()
    assert json.loads(captured.out)["embedding"]
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(afile) in warnings[0] and compile_cache.ENV_VAR in warnings[0]
    assert afile.read_text() == "mine"


def test_a_full_disk_is_a_reason_the_cache_is_unusable(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(compile_cache.os, "write", full)
    assert compile_cache.unusable(tmp_path / "cache") == os.strerror(errno.ENOSPC)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # the probe is removed


def test_a_program_cache_on_a_full_disk_warns_once_and_runs(jax_only_model, tmp_path, capsys,
                                                            monkeypatch):
    from tarka_jax import Embedder

    texts = ["a short text", "another, slightly longer text to embed", "x" * 200]
    program_cache.disable()
    ref = Embedder.from_pretrained(jax_only_model).encode(texts, batch_size=2)

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    cache = program_cache.enable(tmp_path / "programs")
    try:
        got = Embedder.from_pretrained(jax_only_model).encode(texts, batch_size=2)
    finally:
        program_cache.disable()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert not cache.writable and cache.stats["exported"] == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings
    assert not list((tmp_path / "programs").glob("*.partial-*"))


# ---- evaluate --pairs ----------------------------------------------------------------------

PAIRS = [{"query": "the red planet", "document": "mars is the red planet", "score": 5},
         {"query": "a gas giant", "document": "saturn is a gas giant", "score": 4},
         {"query": "light", "document": "the moon orbits", "score": 1}]


def _pairs_file(tmp_path, records=PAIRS) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_evaluate_pairs_as_the_readme_shows_it(jax_only_model, tmp_path, capsys):
    from tarka_jax import Embedder
    from tarka_jax.evaluation.scores import evaluate_pairs

    assert main(["evaluate", "-m", jax_only_model, "--pairs", _pairs_file(tmp_path),
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = evaluate_pairs(Embedder.from_pretrained(jax_only_model), PAIRS)
    assert got.keys() == want.keys() and {"eval_ndcg@10", "eval_sts_spearman"} <= set(got)
    assert got == pytest.approx(want, abs=1e-6)
    # with a teacher and no --texts, the pairs' queries and documents are the held-out texts
    assert main(["evaluate", "-m", jax_only_model, "--teacher", jax_only_model,
                 "--pairs", _pairs_file(tmp_path), "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["texts"] == 2 * len(PAIRS) and both["eval_top1"] == 1.0
    assert both["eval_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert {k: both[k] for k in got} == pytest.approx(got, abs=1e-6)


@pytest.mark.parametrize("line, message", [
    ({"text": "only a text"}, r'pairs.jsonl:2 needs string "query" and "document"'),
    ({"query": "q", "document": "d", "score": "high"}, r'pairs.jsonl:2: "score" must be'),
    ("not an object", r"pairs.jsonl:2 is not a JSON object"),
])
def test_a_bad_pairs_file_names_file_and_line(jax_only_model, tmp_path, capsys, line, message):
    assert main(["evaluate", "-m", jax_only_model,
                 "--pairs", _pairs_file(tmp_path, [PAIRS[0], line])]) == 2
    assert __import__("re").search(message, _one_line(capsys, "evaluate"))


def test_evaluate_says_what_it_needs(jax_only_model, capsys):
    assert main(["evaluate", "-m", jax_only_model]) == 2
    assert "--pairs" in _one_line(capsys, "evaluate")


# ---- model folder not found ----------------------------------------------------------------


@pytest.fixture
def models(jax_only_model, tmp_path, monkeypatch):
    """A working directory holding models/my-model."""
    shutil.copytree(jax_only_model, tmp_path / "models" / "my-model")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "models"


@pytest.mark.parametrize("argument, closest", [
    ("models/my-modle", "models/my-model"),      # a mistyped path: not a hub id
    ("./models/my-modle", "models/my-model"),
    ("modles/my-model/x", "models"),             # the first missing part is compared
    ("my-modle", None),                          # a hub-like name, hub offline
])
def test_a_mistyped_model_names_the_closest_folder(models, capsys, argument, closest):
    assert main(["embed", "-m", argument, "x"]) == 2
    err = _one_line(capsys, "embed")
    assert f"model folder not found: {argument}" in err
    if closest:
        assert f"(closest: {closest})" in err
    if "/" not in argument:
        assert "offline" in err


def test_a_hub_id_offline_or_unreachable_is_not_found(models, monkeypatch):
    import huggingface_hub

    from tarka_jax.convert import open_model
    from tarka_jax.convert.sources import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match=r"model folder not found: models/my-modle "
                                                 r"\(closest: models/my-model\)"):
        open_model("models/my-modle")  # also a valid org/name: the hub is offline here
    with pytest.raises(FileNotFoundError, match="the hub is offline"):
        open_model("org/no-such-model")

    class ConnectError(Exception):  # httpx's name; the class is not imported
        pass

    def unreachable(*args, **kwargs):
        raise ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelNotFoundError, match=r"could not be reached \(ConnectError\)"):
        open_model("org/no-such-model")


def test_an_org_name_id_still_comes_from_a_reachable_hub(models, monkeypatch):
    import huggingface_hub

    from tarka_jax.convert import open_model

    asked = []

    def download(repo_id, **kwargs):
        asked.append(repo_id)
        return str(models / "my-model")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    assert open_model("org/my-model").folder == str(models / "my-model")
    assert asked == ["org/my-model"]


# ---- missing extras ------------------------------------------------------------------------


def test_a_missing_mteb_names_the_pip_line(jax_only_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mteb", None)  # as if not installed
    assert main(["mteb", "-m", jax_only_model, "--tasks", "STS12", "-o", str(tmp_path)]) == 2
    assert "pip install 'tarka-jax[mteb]'" in _one_line(capsys, "mteb")


@pytest.mark.parametrize("module, build, pip", [
    ("tensorboardX", lambda tmp: __import__("tarka_jax.train.metrics", fromlist=["x"])
     .MetricsWriter(str(tmp), total_steps=1, tensorboard=True, progress=False),
     "pip install tensorboardX"),
    ("sentence_transformers", lambda tmp: __import__("tarka_jax.recipe.teacher_cache",
                                                     fromlist=["x"])
     ._TorchTeacher("org/teacher", "float32", None, None),
     "pip install 'tarka-jax[torch-teacher]'"),
    ("pyarrow", lambda tmp: __import__("tarka_jax.train.data", fromlist=["x"])
     .check_files([str(tmp / "x.parquet")], "data.train"), "pip install pyarrow"),
])
def test_a_missing_extra_names_the_pip_line(tmp_path, monkeypatch, module, build, pip):
    from tarka_jax.errors import TarkaError

    (tmp_path / "x.parquet").write_bytes(b"")
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(TarkaError, match=pip.replace("[", r"\[").replace("]", r"\]")):
        build(tmp_path)


# ---- a model folder's files are regular files -----------------------------------------------


@pytest.mark.parametrize("name", ["config.json", "modules.json", "tokenizer_config.json",
                                  "model.safetensors", "1_Pooling/config.json"])
def test_a_fifo_in_a_model_folder_is_refused_not_waited_on(jax_only_model, tmp_path, capsys,
                                                           name):
    """Opening a FIFO blocks until a writer comes: every command loading the folder hung."""
    import shutil
    import threading

    folder = tmp_path / "model"
    shutil.copytree(jax_only_model, folder)
    fifo = folder / name
    fifo.unlink()
    os.mkfifo(fifo)

    def unblock():  # on a regression: let the blocked reader see EOF, so the test fails
        with open(fifo, "wb"):
            pass

    watchdog = threading.Timer(60, unblock)
    watchdog.daemon = True
    watchdog.start()
    try:
        assert main(["embed", "-m", str(folder), "hello"]) == 2
    finally:
        watchdog.cancel()
    assert "is a FIFO, not a regular file" in _one_line(capsys, "embed")

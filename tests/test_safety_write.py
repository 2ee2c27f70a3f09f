"""Writers never destroy what they did not write: the converters' --force cases on real folders.

Each refused case checks the message says why *and* that every file of the
folders involved is still there, byte for byte (on the code before this change
each of these deleted the source, the project folder or the user's files).
Torch-free: the source is the JAX-written ``jax_only_model`` folder.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tarka_jax.convert.flax_to_hf import flax_to_hf
from tarka_jax.convert.flax_to_hf import main as flax_to_hf_main
from tarka_jax.convert.hf_to_flax import hf_to_flax
from tarka_jax.convert.hf_to_flax import main as hf_to_flax_main
from tarka_jax.files.marker import MARKER, UnsafeOutputError
from tarka_jax.files.outputs import output_folder


@pytest.fixture
def src(jax_only_model, tmp_path):
    """A private copy of a sentence-transformers folder (this test may try to destroy it)."""
    folder = tmp_path / "project" / "model"
    shutil.copytree(jax_only_model, folder)
    return str(folder)


def _refused(main_fn, argv, capsys, why: str) -> None:
    assert main_fn(argv) == 2
    err = capsys.readouterr().err
    assert why in err, err


def test_force_onto_the_source_is_refused(snapshot, src, capsys):
    before = snapshot(src)
    _refused(hf_to_flax_main, [src, src, "--force"], capsys, "is the source")
    assert snapshot(src) == before


def test_force_onto_a_parent_of_the_source_is_refused(snapshot, src, capsys):
    parent = os.path.dirname(src)
    with open(os.path.join(parent, "README.txt"), "w") as f:
        f.write("my project\n")
    before = snapshot(parent)
    _refused(hf_to_flax_main, [src, parent, "--force"], capsys, "contains the source")
    assert snapshot(parent) == before


def test_force_onto_the_current_directory_is_refused(snapshot, jax_only_model, tmp_path,
                                                     monkeypatch,
                                                     capsys):
    project = tmp_path / "work"
    (project / "code").mkdir(parents=True)
    (project / "code" / "train.py").write_text("print('mine')\n")
    (project / "notes.md").write_text("notes\n")
    monkeypatch.chdir(project)
    before = snapshot(project)
    _refused(hf_to_flax_main, [jax_only_model, ".", "--force"], capsys, "current directory")
    assert snapshot(project) == before


def test_force_onto_a_folder_with_other_files_is_refused(snapshot, src, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "subdir").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me\n")
    (out / "subdir" / "data.csv").write_text("1,2\n")
    before = snapshot(out)
    _refused(hf_to_flax_main, [src, str(out), "--force"], capsys, "not written by tarka-jax")
    assert snapshot(out) == before


def test_force_replaces_only_our_own_output(snapshot, src, tmp_path, capsys):
    out = str(tmp_path / "flax")
    hf_to_flax(src, out)
    assert os.path.isfile(os.path.join(out, MARKER))
    _refused(hf_to_flax_main, [src, out], capsys, "already exists")  # no --force
    hf_to_flax(src, out, force=True)  # ours, nothing else in it: replaced
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("added later\n")
    before = snapshot(out)
    _refused(hf_to_flax_main, [src, out, "--force"], capsys, "notes.txt")
    assert snapshot(out) == before


def test_failed_write_leaves_the_old_output(snapshot, src, tmp_path):
    out = str(tmp_path / "flax")
    hf_to_flax(src, out)
    before = snapshot(out)
    with pytest.raises(RuntimeError, match="half-way"), output_folder(out, force=True) as tmp:
        with open(os.path.join(tmp, "partial.bin"), "wb") as f:
            f.write(b"x")
        raise RuntimeError("failed half-way")
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["flax", "project"]  # no temporary left behind


def test_output_that_is_a_file_is_refused(src, tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"data")
    with pytest.raises(UnsafeOutputError, match="is a file"):
        hf_to_flax(src, str(target), force=True)
    assert target.read_bytes() == b"data"


def test_export_onto_its_own_run_folder_is_refused(snapshot, src, tmp_path, capsys,
                                                   caplog,
                                                   make_run_folder):
    from tarka_jax.train.optim import OptimizerConfig

    run = make_run_folder(src, str(tmp_path / "run"),
                          {"optimizer": OptimizerConfig().__dict__, "train": {"steps": 20}},
                          steps=(5, 10))
    before = snapshot(run)
    _refused(flax_to_hf_main, [run, run, "--step", "10", "--force"], capsys, "is the source")
    assert snapshot(run) == before
    out = flax_to_hf(run, str(tmp_path / "st"), step=5)  # the run itself exports fine
    assert os.path.isfile(os.path.join(out, "modules.json"))
    assert not [r for r in caplog.records if "read only" in r.getMessage()]  # no absl noise


def test_distill_refuses_a_workdir_that_is_not_a_run(tmp_path):
    from tarka_jax.train.run_files import claim_run_folder

    work = tmp_path / "mine"
    work.mkdir()
    (work / "notes.txt").write_text("x\n")
    with pytest.raises(FileExistsError, match="not a run folder"):
        claim_run_folder(str(work), resume=False, loop="distill")
    assert claim_run_folder(str(tmp_path / "new"), resume=False, loop="distill") is None


def test_init_student_force_into_a_folder_with_other_files_is_refused(snapshot, src, tmp_path,
                                                                     capsys):
    from tarka_jax.cli import main

    out = tmp_path / "student"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}\n')
    before = snapshot(out)
    assert main(["init-student", "--teacher", src, "--tokenizer", src, "--out", str(out),
                 "--force"]) == 2
    assert "not written by tarka-jax" in capsys.readouterr().err
    assert snapshot(out) == before

"""Run folders a run can prove it owns, checkpoints that do not read back, resume
fingerprints, and writes that fail on a full disk (issue 26, training).

Torch-free: the JAX-written ``jax_only_model`` and examples/data. Most run folders come
from the run's own helpers (the ``make_run_folder`` fixture), so nothing compiles; a resume
to ``--max-steps`` equal to the checkpoint restores and checks for real and runs no step.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap

import pytest

from tarka_jax.cli import main as cli_main
from tarka_jax.testing.run_configs import distill_tables, finetune_tables, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "examples", "data", "tiny_train.txt")
PAIRS = os.path.join(ROOT, "examples", "data", "stdlib", "pairs.jsonl.gz")


def _distill_toml(folder, model, train=TRAIN, name="run.toml") -> str:
    return write_config(folder / name, distill_tables(
        model, model, [train], loss={"cosine": 1.0, "kl": 0.0},
        data={"batch_size": 4, "max_seq_length": 16, "teacher_max_seq_length": 16,
              "buckets": [16]}))


def _finetune_toml(folder, model) -> str:
    return write_config(folder / "ft.toml", finetune_tables(model, [PAIRS],
                                                            data={"batch_size": 4}))


def _snapshot(folder) -> dict[str, bytes]:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _one_line_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("tarka-jax ") and needle in err, err
    return err


def _run_folder(make_run_folder, model, tmp_path, train=TRAIN, steps=(2,), base_dir="."):
    """A distillation run folder of the run.toml config, saved at ``steps``."""
    from tarka_jax.distill.config import load_config
    from tarka_jax.train.data import read_corpus

    config = load_config(_distill_toml(tmp_path, model, train))
    texts = read_corpus([os.path.join(base_dir, train)], "text")
    position = {"epoch": 0, "index": 0, "seed": 0, "batch_size": 4, "num_texts": len(texts)}
    return make_run_folder(model, str(tmp_path / "run"), config.to_dict(), steps, position,
                           base_dir=base_dir)


# ---- ownership ------------------------------------------------------------------------------

FOREIGN_MARKERS = [
    '{"format": "wandb-run", "id": "3x9"}',  # another tool's run.json
    "not json at all",
    '{"format": "tarka-jax-run", "version": 3}',
    '{"format": "tarka-jax-run", "version": true}',
    '{"format": "tarka-jax-run", "version": 2, "run_id": "x", "loop": "distill"}',
    '["tarka-jax-run"]',
]


@pytest.mark.parametrize("marker", FOREIGN_MARKERS)
def test_a_fresh_run_never_writes_into_a_folder_whose_run_json_is_not_ours(
        jax_only_model, tmp_path, capsys, marker):
    work = tmp_path / "theirs"
    for rel, data in [("run.json", marker), ("checkpoints/100/model.pt", "weights"),
                      ("tensorboard/events.out", "events"), ("metrics.jsonl", '{"x": 1}\n')]:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(data)
    before = _snapshot(work)
    config = _distill_toml(tmp_path, jax_only_model)
    assert cli_main(["distill", "--config", config, "--workdir", str(work)]) == 2
    _one_line_error(capsys, str(work / "run.json"))
    assert _snapshot(work) == before
    if marker == FOREIGN_MARKERS[0]:
        assert cli_main(["finetune", "--config", _finetune_toml(tmp_path, jax_only_model),
                         "--workdir", str(work)]) == 2
        _one_line_error(capsys, "is not a tarka-jax run file")
        assert _snapshot(work) == before


def _random_marker(rng: random.Random):
    """(run.json text, whether it is a valid tarka-jax run file)."""
    from tarka_jax.train.run_files import new_run

    good = new_run(rng.choice(["distill", "finetune"]), config={"train": {"steps": 2}},
                   model={"hidden_size": 8}, sources={}, inputs={})
    legacy = {"format": "tarka-jax-distill-run", "version": 1, "config": {}, "student": {},
              "teacher": {}}
    marker = dict(rng.choice([good, legacy]))
    junk = [None, 0, 2, True, "", "x", [], {}, "tarka-jax-run", "0" * 32, 1.5]
    kind = rng.randrange(5)
    if kind == 0:
        return json.dumps(marker), True
    if kind == 1:
        del marker[rng.choice(sorted(marker))]
    elif kind == 2:
        key = rng.choice(sorted(marker))
        value = rng.choice([v for v in junk if v != marker[key] or type(v) is not type(
            marker[key])])
        if key in ("run_id", "created") and isinstance(value, str) and value != "":
            value = value + "!"  # a string that is not an id / still not a table
        marker[key] = value
    elif kind == 3:
        return rng.choice(['{"format": "tarka-jax-run"', "\x00\xff", "[]", "null", "7"]), False
    else:
        marker["format"] = rng.choice(["tarka-jax", "tarka-jax-run ", "TARKA-JAX-RUN", "wandb"])
    from tarka_jax.convert.run_folder import RunFolderError, validate_run

    try:
        validate_run(marker, "run.json")
        valid = True
    except RunFolderError:
        valid = False
    return json.dumps(marker), valid


def test_random_markers_and_user_files_nothing_unowned_is_touched(tmp_path):
    """Property: for random run.json markers and random user files, a fresh start either
    refuses (nothing changes) or, for a valid marker only, moves the names a run writes into
    ``replaced-*/`` byte for byte; every other file stays where it was, unchanged."""
    from tarka_jax.convert.run_folder import RunFolderError
    from tarka_jax.train.run_files import RUN_NAMES, claim_run_folder, set_aside

    rng = random.Random(26)
    names = ["notes.txt", "metrics.jsonl", "config.toml", "student/tokenizer.json",
             "checkpoints/5/x", "tensorboard/ev", ".run.json.tmp", "run.json.tmp", "a",
             "replaced-abc/metrics.jsonl", "config_changes.jsonl", "data/train.txt"]
    valid_seen = refused_seen = 0
    for case in range(80):
        work = tmp_path / f"case{case}"
        work.mkdir()
        marker, valid = _random_marker(rng)
        (work / "run.json").write_text(marker)
        for rel in rng.sample(names, rng.randrange(len(names) + 1)):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_bytes(rng.randbytes(rng.randrange(40)))
        before = _snapshot(work)
        try:
            old = claim_run_folder(str(work), resume=False, loop="distill")
        except RunFolderError as e:
            assert not valid, (marker, e)
            assert str(work / "run.json") in str(e) and "\n" not in str(e)
            assert _snapshot(work) == before
            refused_seen += 1
            continue
        assert valid, marker
        valid_seen += 1
        set_aside(str(work), old)
        after = _snapshot(work)
        replaced = [d for d in os.listdir(work) if d.startswith("replaced-") and
                    d != "replaced-abc"]
        assert len(replaced) == 1
        for rel, data in before.items():
            top = rel.split(os.sep)[0]
            if top in RUN_NAMES and top != "run.json":
                assert after[os.path.join(replaced[0], rel)] == data, rel
                assert rel not in after
            else:
                assert after[rel] == data, rel  # unowned, or run.json (still the marker)
        assert after[os.path.join(replaced[0], "run.json")] == before["run.json"]
    assert valid_seen >= 10 and refused_seen >= 30  # both branches exercised


def test_a_fresh_run_sets_an_earlier_run_aside(jax_only_model, tmp_path):
    from tarka_jax.distill.config import load_config
    from tarka_jax.distill.run import train
    from tarka_jax.train.metrics import read_metrics
    from tarka_jax.train.run_files import new_run

    work = tmp_path / "run"
    work.mkdir()
    old = new_run("distill", config={}, model={}, sources={}, inputs={})
    (work / "run.json").write_text(json.dumps(old))
    (work / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    (work / "notes.txt").write_text("mine\n")
    config = load_config(_distill_toml(tmp_path, jax_only_model))
    assert train(config, str(work), max_steps=1)["step"] == 1
    aside = work / ("replaced-" + old["run_id"][:12])
    assert (aside / "metrics.jsonl").read_text() == '{"step": 1, "loss": 9.0}\n'
    assert json.loads((aside / "run.json").read_text()) == old
    assert (work / "notes.txt").read_text() == "mine\n"
    run = json.loads((work / "run.json").read_text())
    assert run["run_id"] != old["run_id"] and run["loop"] == "distill"
    assert [r["step"] for r in read_metrics(str(work))] == [1]
    assert sorted(run["inputs"]) == ["data.train", "model.student", "model.teacher"]


# ---- checkpoints that do not read back ------------------------------------------------------


def _corrupt(run_dir: str, step: int) -> None:
    """Cut the largest file of the step's train state and params short (a disk that lost
    its tail)."""
    for item in ("state", "params"):
        folder = os.path.join(run_dir, "checkpoints", str(step), item)
        files = [os.path.join(r, n) for r, _, names in os.walk(folder) for n in names]
        os.truncate(max(files, key=os.path.getsize), 10)


def test_a_corrupt_latest_checkpoint_is_named_and_resume_falls_back(
        jax_only_model, tmp_path, make_run_folder, capfd):
    from tarka_jax.convert.flax_to_hf import main as flax_to_hf_main
    from tarka_jax.distill.config import load_config
    from tarka_jax.distill.run import train

    run = _run_folder(make_run_folder, jax_only_model, tmp_path, steps=(2, 4))
    _corrupt(run, 4)
    # Exporting the unreadable step: one line naming it and the saved steps, no dump.
    assert flax_to_hf_main([run, str(tmp_path / "out"), "--step", "4"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < 600, err
    assert f"checkpoint step 4 of {run} cannot be read (" in err and "saved steps: [2, 4]" in err
    config = load_config(str(tmp_path / "run.toml"))
    assert train(config, run, resume=True, max_steps=2)["step"] == 2  # restored step 2
    lines = capfd.readouterr().err.strip().splitlines()
    named = [ln for ln in lines if "checkpoint step 4" in ln]
    assert len(named) == 1 and "is unreadable (" in named[0] and len(named[0]) < 600, lines
    assert any("resuming from step 2, the newest readable checkpoint" in ln for ln in lines)
    assert os.path.isdir(os.path.join(run, "checkpoints", "unreadable-4"))  # kept, not deleted
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["2", "unreadable-4"]


def test_no_readable_checkpoint_is_one_line_naming_each_step(
        jax_only_model, tmp_path, make_run_folder, capsys):
    run = _run_folder(make_run_folder, jax_only_model, tmp_path, steps=(2, 4))
    _corrupt(run, 2)
    _corrupt(run, 4)
    assert cli_main(["distill", "--config", str(tmp_path / "run.toml"), "--workdir", run,
                     "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("tarka-jax distill: error: --resume: no readable checkpoint in ")
    assert "step 4: " in err and "step 2: " in err and len(err) < 1200
    assert "TensorStore" not in err and "tensorstore_spec" not in err


# ---- fingerprints ---------------------------------------------------------------------------


def test_resume_refuses_training_data_changed_in_place(jax_only_model, tmp_path,
                                                       make_run_folder, capsys):
    from tarka_jax.distill.config import load_config
    from tarka_jax.distill.run import train
    from tarka_jax.train.resume_check import ConfigChangeError, read_changes

    data = tmp_path / "train.txt"
    shutil.copy(TRAIN, data)
    run = _run_folder(make_run_folder, jax_only_model, tmp_path, train=str(data))
    lines = data.read_text().splitlines()
    lines[3] = lines[3][::-1]  # same line count, same length: only the content differs
    data.write_text("\n".join(lines) + "\n")
    config_path = str(tmp_path / "run.toml")
    assert cli_main(["distill", "--config", config_path, "--workdir", run, "--resume"]) == 2
    _one_line_error(capsys, f"data.train[0] {data}: ")
    config = load_config(config_path)
    with pytest.raises(ConfigChangeError, match="input files whose content changed"):
        train(config, run, resume=True, max_steps=2)
    assert read_changes(run) == []
    assert train(config, run, resume=True, max_steps=2, allow_config_change=True)["step"] == 2
    (record,) = read_changes(run)
    assert list(record["changes"]) == ["inputs.data.train[0]"]
    assert record["changes_math"] == ["inputs.data.train[0]"]
    train(config, run, resume=True, max_steps=2)  # accepted once, in force since


def test_resume_refuses_changed_teacher_weights(jax_only_model, tmp_path, make_run_folder):
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from tarka_jax.distill.config import load_config
    from tarka_jax.distill.run import train
    from tarka_jax.train.resume_check import ConfigChangeError

    model = str(tmp_path / "model")
    shutil.copytree(jax_only_model, model)
    run = _run_folder(make_run_folder, model, tmp_path)
    path = os.path.join(model, "model.safetensors")
    with safe_open(path, "np") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    name = sorted(tensors)[0]
    tensors[name] = (tensors[name] + np.float32(1e-3)).astype(tensors[name].dtype)
    save_file(tensors, path, metadata=meta)
    with pytest.raises(ConfigChangeError, match=r"model\.teacher/model\.safetensors "
                                                + os.path.join(model, "model.safetensors")):
        train(load_config(str(tmp_path / "run.toml")), run, resume=True, max_steps=2)


def test_a_run_copied_to_a_new_machine_resumes(jax_only_model, tmp_path, make_run_folder):
    """Paths and modification times change with the copy; the bytes do not."""
    from tarka_jax.distill.config import load_config
    from tarka_jax.distill.run import train
    from tarka_jax.train.resume_check import ConfigChangeError

    first = tmp_path / "vm1"
    (first / "data").mkdir(parents=True)
    shutil.copy(TRAIN, first / "data" / "train.txt")
    _run_folder(make_run_folder, jax_only_model, first, train="data/train.txt",
                base_dir=str(first))
    second = tmp_path / "vm2"
    shutil.copytree(first, second)  # new paths
    for root, _, files in os.walk(second):
        for name in files:
            os.utime(os.path.join(root, name), (2e9, 2e9))  # new times
    config = load_config(str(second / "run.toml"))
    assert config.resolve("data/train.txt") == str(second / "data" / "train.txt")
    assert train(config, str(second / "run"), resume=True, max_steps=2)["step"] == 2
    with open(second / "data" / "train.txt", "a") as f:
        f.write("one more line\n")
    with pytest.raises(ConfigChangeError, match=r"data\.train\[0\]"):
        train(config, str(second / "run"), resume=True, max_steps=2)


# ---- writes that fail -----------------------------------------------------------------------


def test_metrics_on_a_full_disk_name_the_file(tmp_path):
    """/dev/full: every write fails with ENOSPC, a real full disk for one file."""
    from tarka_jax.convert.run_folder import RunFolderError
    from tarka_jax.train.metrics import MetricsWriter

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    os.symlink("/dev/full", tmp_path / "metrics.jsonl")
    writer = MetricsWriter(str(tmp_path), total_steps=2, progress=False)
    with pytest.raises(RunFolderError, match=r"metrics\.jsonl \(step 1\): No space left on "
                                             "device"):
        writer.write(1, {"loss": 1.0})
    writer.close()


DISK_FULL = textwrap.dedent("""\
    import shutil, sys, numpy as np
    from tarka_jax.train import checkpointing as ckpt
    from tarka_jax.train.run_files import new_run, write_run_files
    from tarka_jax.convert.run_folder import RunFolderError
    work, async_save = sys.argv[1], sys.argv[2] == "async"
    try:  # run.json fits; the 1 MiB config.toml does not
        write_run_files(work + "/run", new_run("distill", config={}, model={}, sources={},
                        inputs={}), config_text="#" * (1 << 20), meta=None,
                        tokenizer_folder=work)
    except RunFolderError as e:
        print("RUN", e)
    shutil.rmtree(work + "/run")
    mngr = ckpt.manager(work, keep=2, async_save=async_save)
    state = {"step": np.int32(1), "params": {"w": np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)},
             "opt_state": {}}
    try:
        ckpt.save(mngr, 1, state, {"epoch": 0})
        ckpt.wait(mngr)
    except RunFolderError as e:
        print("SAVE", e)
    mngr.close()
    """)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_checkpoint_save_on_a_full_disk_names_the_folder(tmp_path, mode):
    """A 512 KiB tmpfs (a user namespace's own mount: no root needed where unprivileged user
    namespaces are allowed); the 4 MiB parameter cannot fit."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare")
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("user namespaces are not available here")
    work = tmp_path / "full"
    work.mkdir()
    script = tmp_path / "disk_full.py"
    script.write_text(DISK_FULL)
    proc = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", f'mount -t tmpfs -o size=512k tmpfs "{work}" && '
         f'exec "{sys.executable}" "{script}" "{work}" {mode}'],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert lines["SAVE"].startswith(f"saving checkpoint step 1 to {work}/checkpoints") or \
        lines["SAVE"].startswith(f"saving a checkpoint to {work}/checkpoints"), lines
    assert "disk full (no space left on device)" in lines["SAVE"] and len(lines["SAVE"]) < 400
    assert "Traceback" not in proc.stderr  # orbax's per-thread tracebacks held back
    assert lines["RUN"] == f"writing {work}/run/config.toml: No space left on device"


LATE_CALLBACK = textwrap.dedent("""\
    import asyncio, sys, time, tensorstore as ts
    from tarka_jax.convert.run_folder import checkpoint_manager
    if sys.argv[1] == "manager":
        checkpoint_manager(sys.argv[2]).close()
    loop = asyncio.new_event_loop()
    loop.close()
    def other_error(future):
        raise RuntimeError("other")
    # the first: what a failed save's abandoned write does when it lands
    for callback in (loop.call_soon_threadsafe, other_error):
        promise, future = ts.Promise.new()
        future.add_done_callback(callback)
        promise.set_result(1)
    time.sleep(0.3)
    """)


@pytest.mark.parametrize("with_manager", [False, True])
def test_a_write_landing_after_its_event_loop_closed_prints_nothing(tmp_path, with_manager):
    """The disk-full save above printed a bare ``RuntimeError: Event loop is closed``
    traceback on a loaded CI machine (1 run in ~20 here under load): a TensorStore write of
    the failed save finished after orbax had closed its event loop. Replayed exactly: once a
    checkpoint manager exists that traceback is dropped, and any other stays."""
    script = tmp_path / "late.py"
    script.write_text(LATE_CALLBACK)
    proc = subprocess.run([sys.executable, str(script), "manager" if with_manager else "bare",
                           str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RuntimeError: other" in proc.stderr
    assert ("Event loop is closed" in proc.stderr) is (not with_manager), proc.stderr


def test_a_second_job_into_a_run_folder_in_use_is_refused_and_changes_nothing(
        jax_only_model, tmp_path, capsys):
    """One job per run folder: while another job holds the folder's lock (here: this test, as
    a running distill would), distill and finetune fail at once naming the holder, and the
    folder is as it was; once released, the lock file is gone and a run may start."""
    from tarka_jax.files.joblock import JobLock

    work = tmp_path / "busy"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    lock = JobLock.acquire(str(work), "f" * 32, what="distill", leader=True)
    try:
        before = _snapshot(work)
        config = _distill_toml(tmp_path, jax_only_model)
        assert cli_main(["distill", "--config", config, "--workdir", str(work)]) == 2
        _one_line_error(capsys, "is in use by")
        assert cli_main(["finetune", "--config", _finetune_toml(tmp_path, jax_only_model),
                         "--workdir", str(work)]) == 2
        _one_line_error(capsys, "is in use by")
        assert _snapshot(work) == before
    finally:
        lock.release()
    assert sorted(os.listdir(work)) == ["notes.txt"]


def test_a_refused_resume_leaves_no_folder_behind(jax_only_model, tmp_path, capsys):
    work = tmp_path / "never-made"
    config = _distill_toml(tmp_path, jax_only_model)
    assert cli_main(["distill", "--config", config, "--workdir", str(work), "--resume"]) == 2
    _one_line_error(capsys, "is not a run folder")
    assert not work.exists()


def test_rewriting_metrics_and_run_json_never_touches_a_users_tmp_file(tmp_path):
    """Resuming rewrote metrics.jsonl through the fixed name metrics.jsonl.tmp (and run.json
    through run.json.tmp): a user's file of that name was overwritten, then renamed away."""
    from tarka_jax.files.jsonfiles import write_json
    from tarka_jax.train.metrics import _drop_rows_after

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n{"step": 9}\n')
    for name in ("metrics.jsonl.tmp", "run.json.tmp"):
        (tmp_path / name).write_text("a user's file")
    _drop_rows_after(str(metrics), 1)
    write_json(tmp_path / "run.json", {"format": "x"}, atomic=True)
    assert metrics.read_text() == '{"step": 1}\n'
    assert json.loads((tmp_path / "run.json").read_text()) == {"format": "x"}
    for name in ("metrics.jsonl.tmp", "run.json.tmp"):
        assert (tmp_path / name).read_text() == "a user's file"
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "metrics.jsonl.tmp", "run.json",
                                            "run.json.tmp"]

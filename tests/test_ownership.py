"""Ownership you can prove (docs/safety.md): markers validated, never trusted when malformed;
nothing unowned touched; atomic folder swaps; leftovers of killed runs; the job lock.

Torch- and jax-free in what they exercise: real files, real processes (``os.fork``: the
children run only this file-level code, so the parent's jax state is never used in them),
real signals. Property tests (hypothesis) draw user files and markers at random.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tarka_jax.files import atomic
from tarka_jax.files import outputs as outputs_module
from tarka_jax.files.joblock import JobLock, JobLockError
from tarka_jax.files.marker import LOCK, MARKER, UnsafeOutputError, read_marker, write_marker
from tarka_jax.files.outputs import check_output, output_folder
from tarka_jax.files.ownership import claim_folder, survey

pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")


def write_ours(out, files: dict[str, bytes], force=False) -> None:
    with output_folder(out, force=force, kind="test") as tmp:
        for rel, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            with open(os.path.join(tmp, rel), "wb") as f:
                f.write(data)


def fork(child) -> int:
    """Run ``child()`` in a forked process (exit 0 on return, 1 on error); its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    return pid


def wait(pid: int, timeout: float = 60) -> int:
    """The child's wait status, or a test failure after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"child {pid} did not finish in {timeout} s")


# ---- the marker: validated, never trusted when malformed ------------------------------------


@pytest.mark.parametrize("marker", [
    {"files": "ab"},  # the example: not the names "a" and "b"
    {"format": "tarka-jax-output", "kind": "model", "files": ["a", "b"]},  # version 1
    {"format": "tarka-jax-output", "version": 2, "kind": "m", "files": "ab"},
    {"format": "tarka-jax-output", "version": 2, "kind": "m", "files": {"../a": {}}},
    {"format": "tarka-jax-output", "version": 2, "kind": "m",
     "files": {"/etc/passwd": {"size": 1, "sha256": "0" * 64}}},
    {"format": "tarka-jax-output", "version": 2, "kind": "m",
     "files": {"a": {"size": "1", "sha256": "0" * 64}}},
    [1, 2], "not json",
])
def test_a_malformed_marker_is_never_trusted(snapshot, tmp_path, marker):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("mine\n")
    (out / "b").write_text("mine too\n")
    (out / MARKER).write_text(marker if isinstance(marker, str) else json.dumps(marker))
    before = snapshot(out)
    with pytest.raises(UnsafeOutputError, match="--force refused"):
        write_ours(str(out), {"new.bin": b"x"}, force=True)
    assert snapshot(out) == before


def test_a_copied_marker_does_not_let_force_replace_a_hand_edited_file(snapshot, tmp_path):
    ours = tmp_path / "ours"
    write_ours(str(ours), {"config.json": b'{"layers": 2}\n', "w.bin": b"\x00" * 64})
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.json").write_bytes(b'{"layers": 9}\n')  # same size, edited by hand
    (user / "w.bin").write_bytes(b"\x00" * 64)
    (user / MARKER).write_bytes((ours / MARKER).read_bytes())
    before = snapshot(user)
    with pytest.raises(UnsafeOutputError, match=r"config\.json \(its contents differ"):
        write_ours(str(user), {"config.json": b"{}"}, force=True)
    assert snapshot(user) == before
    write_ours(str(ours), {"config.json": b"{}"}, force=True)  # our own folder: replaced
    assert (ours / "config.json").read_bytes() == b"{}"


def test_anything_unlisted_blocks_force_and_is_named(snapshot, tmp_path):
    out = tmp_path / "out"
    write_ours(str(out), {"a.bin": b"1", "sub/b.bin": b"2"})
    (out / "sub" / "notes.txt").write_text("mine\n")
    os.symlink("/etc/hostname", out / "link")
    before = snapshot(out)
    with pytest.raises(UnsafeOutputError, match=r"link \(a link|sub/notes\.txt"):
        check_output(str(out), force=True)
    assert snapshot(out) == before


def test_a_file_saved_into_out_while_force_runs_is_kept(tmp_path, capsys):
    out = tmp_path / "out"
    write_ours(str(out), {"model.bin": b"old"})
    with output_folder(str(out), force=True, kind="test") as tmp:
        with open(os.path.join(tmp, "model.bin"), "wb") as f:
            f.write(b"new")
        (out / "notes.txt").write_text("saved meanwhile\n")  # the user, during the run
        (out / "model.bin").write_bytes(b"OLD")  # rewritten in place meanwhile
    assert (out / "model.bin").read_bytes() == b"new"
    (old,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tarka-old-")]
    assert (old / "notes.txt").read_text() == "saved meanwhile\n"
    assert (old / "model.bin").read_bytes() == b"OLD"
    err = capsys.readouterr().err
    assert "notes.txt" in err and str(old) in err


# ---- property: nothing unowned is ever touched ----------------------------------------------

NAMES = st.sampled_from(["a", "b", "config.json", "x/y.bin", "x/z", ".hidden", "w.safetensors"])
CLAIM = st.one_of(
    st.just("exact"), st.just("wrong-size"), st.just("wrong-hash"), st.just("missing"),
    st.sampled_from([None, 1, "s", [], {"size": -1}, {"size": 1, "sha256": "zz"}]))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(NAMES, st.binary(max_size=16), max_size=5),
       claims=st.dictionaries(NAMES, CLAIM, max_size=6),
       junk=st.sampled_from([None, "version", "format", "files-list", "runs"]))
def test_property_force_touches_only_exactly_claimed_files(snapshot, tmp_path_factory, files,
                                                           claims, junk):
    root = tmp_path_factory.mktemp("prop")
    out = root / "out"
    out.mkdir()
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    on_disk = {r: (out / r).read_bytes() for r in files if (out / r).is_file()}
    entries = {}
    for rel, how in claims.items():
        data = on_disk.get(rel, b"?")
        digest = hashlib.sha256(data).hexdigest()
        made = {"exact": {"size": len(data), "sha256": digest},
                "wrong-size": {"size": len(data) + 1, "sha256": digest},
                "wrong-hash": {"size": len(data), "sha256": "0" * 64},
                "missing": {"size": 1, "sha256": "1" * 64}}
        entries[rel] = made[how] if isinstance(how, str) and how in made else how
    marker = {"format": "tarka-jax-output", "version": 2, "kind": "t", "runs": [],
              "files": entries, "folders": ["x"]}
    if junk == "version":
        marker["version"] = 1
    elif junk == "format":
        marker["format"] = "other"
    elif junk == "files-list":
        marker["files"] = list(entries)
    elif junk == "runs":
        marker["runs"] = "ab"
    (out / MARKER).write_text(json.dumps(marker))
    before = snapshot(out)
    try:
        write_ours(str(out), {"new.bin": b"n"}, force=True)
    except UnsafeOutputError:
        assert snapshot(out) == before  # refused: not a byte changed
        return
    # Replaced: then every file that was there was claimed exactly, in a valid marker.
    assert junk is None
    for rel, data in on_disk.items():
        assert claims.get(rel) == "exact", (rel, claims)
    assert (out / "new.bin").read_bytes() == b"n"
    assert [p.name for p in root.iterdir()] == ["out"]  # no leftover, nothing else touched


# ---- the atomic swap ------------------------------------------------------------------------


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("A")
    (b / "f").write_text("B")
    if not atomic.exchange(str(a), str(b)):
        pytest.skip("renameat2(RENAME_EXCHANGE) not supported here (the fallback is tested)")
    assert (a / "f").read_text() == "B" and (b / "f").read_text() == "A"


@pytest.mark.parametrize("exchange", [True, False])
def test_replacing_a_folder_keeps_it_present_and_cleans_up(tmp_path, monkeypatch, exchange):
    out = tmp_path / "out"
    write_ours(str(out), {"f": b"0"})
    if not exchange:
        monkeypatch.setattr(outputs_module, "exchange", lambda a, b: False)
    missing, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            if not os.path.isdir(out):
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(1, 25):
            write_ours(str(out), {"f": str(i).encode()}, force=True)
    finally:
        stop.set()
        watcher.join()
    assert (out / "f").read_text() == "24"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left
    if exchange and atomic.exchange(str(out), str(out)):
        assert not missing  # one step: never a moment without the folder


def _kill_during(out: str, point: str, monkeypatch_exchange: bool = False):
    """Child: replace ``out`` and SIGKILL itself at ``point``."""
    def child():
        if monkeypatch_exchange:
            outputs_module.exchange = lambda a, b: False
        if point == "swap":  # after the marker, before the swap / between the two renames
            real_rename = os.rename

            def rename(src, dst):
                if ".tarka-old-" in os.fspath(dst):
                    real_rename(src, dst)
                    os.kill(os.getpid(), signal.SIGKILL)
                if ".tarka-tmp-" in os.fspath(src) and not monkeypatch_exchange:
                    os.kill(os.getpid(), signal.SIGKILL)
                real_rename(src, dst)

            os.rename = rename
            atomic.exchange = outputs_module.exchange = (
                (lambda a, b: False) if monkeypatch_exchange
                else (lambda a, b: os.kill(os.getpid(), signal.SIGKILL)))
        with output_folder(out, force=True, kind="test") as tmp:
            with open(os.path.join(tmp, "f"), "wb") as f:
                f.write(b"new")
            if point == "writing":
                os.kill(os.getpid(), signal.SIGKILL)
    return child


def test_leftovers_of_a_killed_run_are_cleaned_when_ours_or_named(tmp_path, capsys):
    out = str(tmp_path / "out")
    write_ours(out, {"f": b"old"})
    # Killed while writing: the temporary has no marker -> named, kept.
    status = wait(fork(_kill_during(out, "writing")))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    (partial,) = [p for p in os.listdir(tmp_path) if ".tarka-tmp-" in p]
    assert open(os.path.join(out, "f"), "rb").read() == b"old"
    # Killed after the marker, before the swap: the temporary is provably ours -> removed.
    wait(fork(_kill_during(out, "swap")))
    complete = [p for p in os.listdir(tmp_path) if ".tarka-tmp-" in p and p != partial]
    assert len(complete) == 1 and read_marker(os.path.join(tmp_path, complete[0]))
    write_ours(out, {"f": b"next"}, force=True)
    err = capsys.readouterr().err
    assert partial in err and "interrupted" in err
    assert sorted(os.listdir(tmp_path)) == sorted(["out", partial])
    assert open(os.path.join(out, "f"), "rb").read() == b"next"


def test_a_kill_between_the_two_renames_is_named_and_the_old_copy_kept(tmp_path, capsys):
    out = str(tmp_path / "out")
    write_ours(out, {"f": b"old"})
    wait(fork(_kill_during(out, "swap", monkeypatch_exchange=True)))
    assert not os.path.exists(out)  # the fallback's window, cut short by the kill
    (aside,) = [p for p in os.listdir(tmp_path) if ".tarka-old-" in p]
    write_ours(out, {"f": b"new"})
    err = capsys.readouterr().err
    assert aside in err and "previous copy" in err
    assert open(os.path.join(tmp_path, aside, "f"), "rb").read() == b"old"  # never deleted


# ---- the job lock ---------------------------------------------------------------------------


def _hold(folder: str, job: str, ready_w: int):
    def child():
        JobLock.acquire(folder, job, what="holder test")
        os.write(ready_w, b"1")
        time.sleep(120)
    return child


def test_the_lock_refuses_another_job_and_survives_a_crashed_holder(tmp_path):
    folder = str(tmp_path)
    r, w = os.pipe()
    pid = fork(_hold(folder, "a" * 32, w))
    try:
        assert os.read(r, 1) == b"1"
        with pytest.raises(JobLockError, match=rf"in use by holder test .*pid {pid}"):
            JobLock.acquire(folder, "b" * 32, what="second job")
        JobLock.acquire(folder, "a" * 32, leader=False).release()  # the same job joins
        with pytest.raises(JobLockError, match="not by this job"):
            JobLock.acquire(folder, "b" * 32, leader=False)
    finally:
        os.kill(pid, signal.SIGKILL)  # a crash: no release, the file stays
        wait(pid)
    assert os.path.exists(os.path.join(folder, LOCK))
    lock = JobLock.acquire(folder, "b" * 32, what="after the crash")
    assert json.loads(open(lock.path).read())["job"] == "b" * 32
    lock.release()
    assert not os.path.exists(os.path.join(folder, LOCK))


def test_the_lock_never_follows_a_link_or_overwrites_a_users_file(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("mine\n")
    folder = tmp_path / "out"
    folder.mkdir()
    os.symlink(target, folder / LOCK)
    with pytest.raises(JobLockError, match="symlink"):
        JobLock.acquire(str(folder), "c" * 32)
    os.remove(folder / LOCK)
    (folder / LOCK).write_text("my own notes\n")
    with pytest.raises(JobLockError, match="not a tarka-jax lock"):
        JobLock.acquire(str(folder), "c" * 32)
    assert target.read_text() == "mine\n" and (folder / LOCK).read_text() == "my own notes\n"


def test_claims_prove_files_by_identity_or_hash(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "w.bin").write_bytes(b"abc")
    write_marker(str(out), claim_folder(str(out), "t", ["d" * 32]))
    assert not survey(str(out)).foreign
    (out / "w.bin").write_bytes(b"abc")  # rewritten, same bytes: the hash still proves it
    assert not survey(str(out)).foreign
    (out / "w.bin").write_bytes(b"abd")
    assert "w.bin (its contents differ" in survey(str(out)).foreign[0]


def _build_demo_tool():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                        "build_demo_model.py")
    spec = importlib.util.spec_from_file_location("_build_demo_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_demo_model_force_never_deletes_a_users_workdir(tmp_path):
    """`tools/build_demo_model.py --workdir ~ --force` used to shutil.rmtree the home folder."""
    tool = _build_demo_tool()
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    (home / "train.txt").write_text("my own corpus")
    for force in (False, True):
        with pytest.raises(tool.WorkdirError, match="not made by this tool"):
            tool.claim_workdir(str(home), force=force)
    assert tool.main(["--workdir", str(home), "--force"]) == 2
    assert (home / "thesis.tex").read_text() == "years of work"
    assert (home / "train.txt").read_text() == "my own corpus"
    # its own folder: --force removes the stage outputs only, through links never
    work = tmp_path / "work"
    tool.claim_workdir(str(work), force=False)
    (work / "run").mkdir()
    (work / "run" / "metrics.jsonl").write_text("{}")
    (work / "notes.md").write_text("kept")
    (work / "eval.txt").symlink_to(home / "thesis.tex")
    tool.claim_workdir(str(work), force=True)
    assert sorted(os.listdir(work)) == [tool.STAMP, "notes.md"]
    assert (home / "thesis.tex").read_text() == "years of work"


def test_tiny_models_leave_a_users_sibling_tok_folder_alone(tmp_path):
    """write_model(OUT) used OUT_tok as scratch and deleted every file in it afterwards."""
    from tarka_jax.testing.tiny import tiny_config, write_model

    mine = tmp_path / "teacher_tok"
    mine.mkdir()
    (mine / "vocab.txt").write_text("a user's file")
    write_model(str(tmp_path / "teacher"), tiny_config(211, 48, 1, (24,)), seed=0)
    assert (mine / "vocab.txt").read_text() == "a user's file"
    assert (tmp_path / "teacher" / "tokenizer.json").is_file()

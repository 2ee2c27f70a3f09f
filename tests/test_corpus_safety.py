"""embed-corpus, search and embed against a careless or hostile user (issue 26, the writers).

Each test is one of the issue's examples: user files in the output folder, a job killed at
its first manifest write, signals to a real process, a full disk, bad text on the last line,
a fixed input resumed, a corrupt or lying manifest, a changed batch size, folders and FIFOs
as inputs, NaN in `embed`, an `embed --output` onto the model. Real processes run under a
timeout (and an rlimit where the input is a hostile size), so a regression fails, not hangs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tarka_jax.testing.reference import cli_killed_when_replacing

pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")
TIMEOUT = 240
TEXTS = [f"record {i} " + "alpha beta " * (i % 5) for i in range(20)]


def snapshot(folder) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def model(jax_only_model):
    from tarka_jax import Embedder

    return Embedder.from_pretrained(jax_only_model)


def corpus(tmp_path, texts=TEXTS, name="c.txt") -> str:
    path = tmp_path / name
    path.write_bytes(("\n".join(texts) + "\n").encode())
    return str(path)


def run(model, inputs, out, **kw):
    from tarka_jax.corpus.job import embed_corpus

    kw.setdefault("shard_size", 8)
    kw.setdefault("progress", False)
    return embed_corpus(model, inputs if isinstance(inputs, list) else [inputs], str(out),
                        model_name="m", **kw)


def communicate(p: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[str, str]:
    """``p.communicate``, killing the child when it runs past ``timeout`` (a hang fails)."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail(f"{p.args[:4]} ran past {timeout} s (a hang)")


def cli(argv: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TARKA_JAX_COMPILATION_CACHE="0")
    return subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def forked(fn, *args, timeout: float = 60) -> str:
    """What ``fn(*args)`` prints, run in a forked child (file-level code only: the parent's
    jax is never used there) killed after ``timeout`` seconds -- a hang fails, not blocks."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child
        os.close(r)
        try:
            out = str(fn(*args))
        except BaseException as e:  # noqa: BLE001 -- reported to the parent
            out = f"error: {e}"
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    end, chunks = time.monotonic() + timeout, []
    os.set_blocking(r, False)
    while True:
        try:
            chunk = os.read(r, 1 << 16)
        except BlockingIOError:
            chunk = None
        if chunk:
            chunks.append(chunk)
        elif chunk == b"" and os.waitpid(pid, os.WNOHANG)[0]:
            break
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"{fn.__name__} did not return in {timeout} s (a hang)")
        time.sleep(0.01)
    os.close(r)
    return b"".join(chunks).decode()


def user_folder(folder) -> dict[str, str]:
    """A user's folder that happens to hold the names embed-corpus writes."""
    os.makedirs(folder, exist_ok=True)
    for name, data in {"manifest.json": "{}", "ids-000000.json": "[1]",
                       "shard-000000.npy": "not numpy", ".notes.tmp1": "x",
                       ".shard-000001.npy.tmp42": "y", "paper.tex": "z"}.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(data)
    return snapshot(folder)


# ---- writers: nothing of the user's deleted ------------------------------------------------


def test_force_and_output_dot_never_delete_a_users_files(model, tmp_path, monkeypatch):
    path = corpus(tmp_path)
    out = tmp_path / "mine"
    before = user_folder(out)
    with pytest.raises(ValueError, match=r"--force refused: .* not written by tarka-jax"):
        run(model, path, out, force=True)
    assert snapshot(out) == before
    monkeypatch.chdir(out)
    with pytest.raises(ValueError, match="current directory"):
        run(model, path, ".", force=True)
    with pytest.raises(ValueError, match="exists and is not empty"):
        run(model, path, ".")
    assert snapshot(out) == before


def test_force_replaces_our_run_but_not_a_file_added_to_it(model, tmp_path):
    path = corpus(tmp_path)
    out = tmp_path / "out"
    run(model, path, out)
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(ValueError, match=r"--force refused: .*notes\.txt"):
        run(model, path, out, force=True)
    os.remove(out / "notes.txt")
    (out / "shard-000001.npy").write_bytes((out / "shard-000001.npy").read_bytes()[:-4]
                                           + b"\0\0\0\0")  # hand-edited, same size
    with pytest.raises(ValueError, match=r"shard-000001\.npy \(its contents differ"):
        run(model, path, out, force=True)
    os.remove(out / "shard-000001.npy")
    from tarka_jax.files.marker import read_marker

    first = read_marker(str(out)).runs
    run(model, path, out, force=True)  # ours, unchanged: replaced
    assert read_marker(str(out)).runs != first
    from tarka_jax.corpus.store import read_embeddings

    np.testing.assert_allclose(read_embeddings(out), model.encode(TEXTS), rtol=0, atol=1e-6)


def test_resume_touches_only_its_own_temporaries(model, tmp_path):
    from tarka_jax.corpus.store import read_manifest, write_json_atomic
    from tarka_jax.files.marker import read_marker, tmp_name

    path = corpus(tmp_path)
    out = tmp_path / "out"
    run(model, path, out)
    run_id = read_marker(str(out)).runs[-1]
    os.remove(out / "shard-000001.npy")
    write_json_atomic(str(out / "manifest.json"), {**read_manifest(str(out)),
                                                   "complete": False}, run_id)
    (out / tmp_name("shard-000001.npy", run_id)).write_bytes(b"partial")  # the run's own
    mine = {".notes.tmp1": b"a", ".shard-000001.npy.tmp7": b"b", ".x.tarka-tmp-" + "e" * 32: b"c"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    run(model, path, out, resume=True)
    assert {n: (out / n).read_bytes() for n in mine} == mine
    assert not os.path.exists(out / tmp_name("shard-000001.npy", run_id))
    # A file under a shard's name that is not a finished shard and not ours: refused.
    os.remove(out / "shard-000002.npy")
    write_json_atomic(str(out / "manifest.json"), {**read_manifest(str(out)),
                                                   "complete": False}, run_id)
    (out / "ids-000002.json").write_text("[\"mine\"]")
    with pytest.raises(ValueError, match=r"ids-000002\.json is not part of a finished shard"):
        run(model, path, out, resume=True)
    assert (out / "ids-000002.json").read_text() == "[\"mine\"]"


def test_another_job_on_the_same_folder_is_refused(model, tmp_path):
    from tarka_jax.files.joblock import JobLock

    path = corpus(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    r, w = os.pipe()
    holder = os.fork()
    if holder == 0:  # pragma: no cover -- the other job
        JobLock.acquire(str(out), "f" * 32, what="other job")
        os.write(w, b"1")
        time.sleep(120)
        os._exit(0)
    try:
        assert os.read(r, 1) == b"1"
        with pytest.raises(ValueError, match=rf"in use by other job .*pid {holder}"):
            run(model, path, out)
    finally:
        os.kill(holder, signal.SIGKILL)  # a crash: the lock goes with the process
        os.waitpid(holder, 0)
    run(model, path, out)
    assert not os.path.exists(out / ".tarka-jax-lock")


# ---- kills, signals, a full disk ------------------------------------------------------------


@pytest.mark.slow  # real embed-corpus processes: leg 1 only
def test_a_kill_during_the_first_manifest_write_leaves_a_folder_a_rerun_accepts(
        jax_only_model, model, tmp_path):
    path = corpus(tmp_path)
    out = tmp_path / "out"
    p = cli(["-c", cli_killed_when_replacing("manifest.json"), "embed-corpus", "-m", jax_only_model, "-i", path,
             "-o", str(out), "--shard-size", "8", "--no-progress"])
    communicate(p)
    assert p.returncode == -signal.SIGKILL and os.listdir(out)
    import shutil

    shutil.copytree(out, tmp_path / "copy", symlinks=True)
    run(model, path, out, resume=True)  # --resume accepts it (starts afresh)
    assert not [n for n in os.listdir(out) if "tmp" in n or n == ".tarka-jax-lock"]
    run(model, path, tmp_path / "copy")  # and so does a plain rerun


@pytest.mark.slow  # real embed-corpus processes: leg 1 only
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_embed_corpus_promptly_and_says_how_to_resume(jax_only_model, tmp_path,
                                                                    sig):
    from tarka_jax.corpus.store import read_manifest

    texts = [f"text {i} " + "word " * (i % 9) for i in range(60_000)]
    path = corpus(tmp_path, texts)
    out = tmp_path / "out"
    # Started as a background job of a script is: SIGINT inherited as "ignored".
    p = cli(["-m", "tarka_jax", "embed-corpus", "-m", jax_only_model, "-i", path, "-o",
             str(out), "--shard-size", "500", "--no-progress"],
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    end = time.monotonic() + TIMEOUT
    while not (out.exists() and any(n.startswith("shard-") for n in os.listdir(out))):
        assert p.poll() is None and time.monotonic() < end, p.communicate()[1][-2000:]
        time.sleep(0.05)
    sent = time.monotonic()
    p.send_signal(sig)
    _, err = communicate(p)
    took = time.monotonic() - sent
    assert p.returncode == 128 + sig, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert f"interrupted by {signal.Signals(sig).name}" in last and "--resume" in last, err
    assert f"kept in {out}" in last and took < 60
    done = [n for n in os.listdir(out) if n.startswith("shard-")]
    assert 0 < len(done) < 120 and not [n for n in os.listdir(out) if ".tarka-tmp-" in n
                                        and not n.startswith(".receipts")]
    from tarka_jax.corpus import folder

    manifest = read_manifest(str(out))  # what a --resume starts from
    assert not manifest["complete"] and folder.precheck(str(out), manifest, True, False)[0]


def test_disk_full_names_the_path(model, tmp_path, monkeypatch):
    from tarka_jax.files import atomic

    real_open = atomic._open_tmp

    def full(path):  # the kernel's own ENOSPC, from /dev/full
        return os.open("/dev/full", os.O_WRONLY) if "shard-000001" in path else real_open(path)

    monkeypatch.setattr(atomic, "_open_tmp", full)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"disk full: could not write .*out/shard-000001\.npy"
                                         r".*--resume"):
        run(model, corpus(tmp_path), out)
    assert "shard-000000.npy" in os.listdir(out)


@pytest.mark.slow  # a real embed-corpus process: leg 1 only
def test_a_file_size_limit_is_named_not_a_short_write(jax_only_model, tmp_path):
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    out = tmp_path / "out"
    p = cli(["-m", "tarka_jax", "embed-corpus", "-m", jax_only_model, "-i",
             corpus(tmp_path, TEXTS * 10), "-o", str(out), "--shard-size", "100",
             "--no-progress"], preexec_fn=limit)
    _, err = communicate(p)
    assert p.returncode == 2 and "Traceback" not in err, err
    # the rows table is written first (its shard, last, marks the pair finished)
    assert "file size limit exceeded: could not write" in err and "rows-000000.npy" in err
    assert "requested and" not in err


# ---- bad text found before compute; a fixed input resumed -----------------------------------


@pytest.mark.parametrize("name,data,where", [
    ("bad.txt", b"fine\nalso fine\nlast \xff line", "bad.txt:3: not valid UTF-8 (byte 0xff)"),
    ("cut.txt", b"fine\nends inside \xe2\x82", "cut.txt:2: not valid UTF-8"),
    ("lone.txt", b"a\n\xed\xa0\x80\n", "lone.txt:2: not valid UTF-8"),
    ("lone.jsonl", b'{"text": "a"}\n{"text": "b \\ud800"}\n', 'lone.jsonl:2: field "text" '
                                                              "holds a lone surrogate"),
])
def test_bad_text_anywhere_is_named_before_any_compute(model, tmp_path, monkeypatch, name,
                                                        data, where):
    good = corpus(tmp_path, TEXTS, "good.txt")
    (tmp_path / name).write_bytes(data)
    calls = []
    monkeypatch.setattr(type(model), "encode", lambda self, *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="^" + str(tmp_path / where).replace(".", r"\.")
                       .replace("(", r"\(").replace(")", r"\)")):
        run(model, [good, str(tmp_path / name)], tmp_path / "out")
    assert not calls and not (tmp_path / "out").exists()


def test_errors_replace_reads_bad_text_and_is_recorded(model, tmp_path):
    from tarka_jax.corpus.store import read_embeddings

    (tmp_path / "a.jsonl").write_bytes(b'{"text": "x \\ud800 y"}\n{"text": "caf\xe9"}\n')
    out = tmp_path / "out"
    run(model, [str(tmp_path / "a.jsonl")], out, errors="replace")
    want = model.encode(["x \ufffd y", "caf\ufffd"])
    np.testing.assert_allclose(read_embeddings(out), want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"a\.jsonl:1: field \"text\" holds a lone surrogate"):
        run(model, [str(tmp_path / "a.jsonl")], out, resume=True)  # strict: refused first
    clean = corpus(tmp_path)
    run(model, clean, tmp_path / "out2", errors="replace")
    with pytest.raises(ValueError, match="errors: 'replace' vs 'strict'"):
        run(model, clean, tmp_path / "out2", resume=True)


def test_a_fixed_input_resumes_when_its_part_is_not_embedded_yet(model, tmp_path):
    from tarka_jax.corpus.store import read_embeddings, read_manifest, write_json_atomic
    from tarka_jax.files.marker import read_marker

    first = corpus(tmp_path, TEXTS, "a.txt")  # records 0..19: shards 0, 1, 2 (of 8)
    second = corpus(tmp_path, ["typo here"] * 8, "b.txt")  # records 20..27: shards 2, 3
    out = tmp_path / "out"
    run(model, [first, second], out)
    run_id = read_marker(str(out)).runs[-1]
    for k in (2, 3):  # as if stopped after shards 0 and 1
        os.remove(out / f"shard-00000{k}.npy")
    write_json_atomic(str(out / "manifest.json"), {**read_manifest(str(out)),
                                                   "complete": False}, run_id)
    corpus(tmp_path, ["fixed here"] * 8, "b.txt")  # same record count
    run(model, [first, second], out, resume=True)
    np.testing.assert_allclose(read_embeddings(out), model.encode(TEXTS + ["fixed here"] * 8),
                               rtol=0, atol=1e-6)
    corpus(tmp_path, TEXTS[:-1] + ["changed"], "a.txt")  # embedded already: refused
    with pytest.raises(ValueError, match=r"input .*a\.txt changed but its records 0\.\.19 are "
                                         r"already embedded in shard-000000\.npy"):
        run(model, [first, second], out, resume=True)


def test_resume_refuses_another_batch_size(model, tmp_path):
    path = corpus(tmp_path)
    run(model, path, tmp_path / "out", batch_size=4)
    with pytest.raises(ValueError, match="settings differ.*batch_size: 4 vs 8"):
        run(model, path, tmp_path / "out", resume=True, batch_size=8)


# ---- manifests that lie ---------------------------------------------------------------------


def test_a_corrupt_manifest_names_its_file(model, tmp_path):
    from tarka_jax.corpus.store import read_embeddings

    out = tmp_path / "out"
    run(model, corpus(tmp_path), out)
    (out / "manifest.json").write_text('{"format": "tarka-jax-corpus", ')
    with pytest.raises(ValueError, match=rf"{out}/manifest\.json is not valid JSON"):
        read_embeddings(out)
    with pytest.raises(ValueError, match=rf"{out}/manifest\.json is not valid JSON"):
        run(model, corpus(tmp_path), out, resume=True)


HOSTILE_MANIFEST = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
from tarka_jax.corpus.store import read_embeddings, read_ids
for fn in (read_embeddings, read_ids):
    try:
        fn(sys.argv[1])
    except ValueError as e:
        print(e)
"""


def test_a_manifest_claiming_1e10_shards_is_refused_at_once(model, tmp_path):
    out = tmp_path / "out"
    run(model, corpus(tmp_path), out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(records=10**10 * 8, shards=10**10)
    (out / "manifest.json").write_text(json.dumps(manifest))
    p = cli(["-c", HOSTILE_MANIFEST, str(out)])
    printed, err = communicate(p, 120)
    assert p.returncode == 0, err
    assert printed.count("incomplete: 9999999998 of 10000000000 shards missing") == 2, printed
    manifest.update(shards=10**10, records=5)
    (out / "manifest.json").write_text(json.dumps(manifest))
    p = cli(["-c", HOSTILE_MANIFEST, str(out)])
    printed, err = communicate(p, 120)
    assert printed.count("the manifest is corrupt") == 2, (printed, err)


# ---- inputs: folders, FIFOs -----------------------------------------------------------------

def list_inputs(*patterns) -> str:
    from tarka_jax.corpus.reader import describe_inputs, expand_inputs

    notes = []
    paths = expand_inputs(patterns, notes)
    return "\n".join(notes) + f"\n{[f.records for f in describe_inputs(paths)]}"


def test_input_folder_reads_its_files_and_skips_fifos_unopened(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("1\n2\n")
    (data / "b.jsonl").write_text('{"text": "3"}\n')
    (data / "notes.csv").write_text("x\n")
    (data / "sub").mkdir()
    os.mkfifo(data / "pipe.txt")  # opened, it would block forever
    printed = forked(list_inputs, str(data))
    assert f"--input {data}: reading 2 file(s) (a.txt, b.jsonl); skipped 3 other entries " \
           "(notes.csv, pipe.txt, sub" in printed, printed
    assert "[2, 1]" in printed
    printed = forked(list_inputs, str(data / "*.txt"))
    assert "skipped" in printed and "pipe.txt (a FIFO" in printed and "[2]" in printed
    assert "is a FIFO, not a regular file" in forked(list_inputs, str(data / "pipe.txt"))
    assert "folder without .txt, .jsonl or .parquet files" in forked(list_inputs,
                                                                     str(data / "sub"))


def test_search_docs_folder_skips_a_fifo_unopened(tmp_path):
    from tarka_jax.files.text_input import read_directory

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("hello\n")
    os.mkfifo(docs / "pipe.txt")
    printed = forked(lambda: (lambda r: f"{r.names} {r.summary()}")(read_directory(docs)))
    assert "['a.txt']" in printed and "pipe.txt (a FIFO)" in printed, printed


# ---- embed: --output and NaN ----------------------------------------------------------------


def test_embed_output_refuses_an_existing_file_and_the_models_own(jax_only_model, tmp_path,
                                                                  capsys):
    from tarka_jax.cli import main

    weights = os.path.join(jax_only_model, "model.safetensors")
    before = open(weights, "rb").read()
    assert main(["embed", "-m", jax_only_model, "-o", weights, "--force", "hi"]) == 2
    assert "model's own folder" in capsys.readouterr().err
    link = tmp_path / "link.npy"
    os.symlink(weights, link)
    assert main(["embed", "-m", jax_only_model, "-o", str(link), "--force", "hi"]) == 2
    assert "model's own folder" in capsys.readouterr().err
    assert open(weights, "rb").read() == before
    mine = tmp_path / "mine.jsonl"
    mine.write_text("keep\n")
    assert main(["embed", "-m", jax_only_model, "-o", str(mine), "hi"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert mine.read_text() == "keep\n"
    assert main(["embed", "-m", jax_only_model, "-o", str(mine), "--force", "hi"]) == 0
    assert json.loads(mine.read_text())["text"] == "hi"


def test_embed_never_prints_nan(jax_only_model, monkeypatch, capsys):
    from tarka_jax.cli import main
    from tarka_jax.inference.embedder import Embedder

    real = Embedder.encode

    def nan_encode(self, texts, **kw):
        out = real(self, texts, **kw)
        out[1, 0] = np.nan
        return out

    monkeypatch.setattr(Embedder, "encode", nan_encode)
    assert main(["embed", "-m", jax_only_model, "ok", "bad"]) == 2
    captured = capsys.readouterr()
    assert "NaN" not in captured.out and captured.out == ""
    assert "the embedding of text 1 (argument 2) holds NaN or inf" in captured.err

"""embed-corpus on two real processes (jax.distributed on 127.0.0.1, gloo CPU collectives).

Both processes are SIGKILLed mid-run, then resumed: the output equals the single-process
``Embedder.encode_document`` result, the shards finished before the kill are untouched, and no
shard is partial or duplicated. Every process runs under a timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tarka_jax.testing.reference import communicate_all, free_port

TIMEOUT = 300  # seconds, per process
SHARD = 8


def env() -> dict:
    out = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1")
    out.pop("XLA_FLAGS", None)
    return out


def launch(args: list[str], n: int, port: int | None = None) -> list[subprocess.Popen]:
    """``n`` processes of ``python -m tarka_jax embed-corpus ARGS`` (multi-process when n > 1)."""
    procs = []
    for i in range(n):
        extra = ([] if n == 1 else ["--coordinator-address", f"127.0.0.1:{port}",
                                    "--num-processes", str(n), "--process-id", str(i)])
        procs.append(subprocess.Popen([sys.executable, "-m", "tarka_jax", "embed-corpus", *args,
                                       *extra], env=env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs, timeout=TIMEOUT) -> list[tuple[int, str]]:
    outputs = communicate_all(procs, timeout)
    return [(p.returncode, err) for p, (_, err) in zip(procs, outputs)]


def shard_files(folder) -> dict[str, tuple[int, int]]:
    return {n: (os.stat(os.path.join(folder, n)).st_ino, os.stat(os.path.join(folder, n))
                .st_mtime_ns) for n in os.listdir(folder) if n.startswith("shard-")}


@pytest.mark.slow
def test_two_processes_sigkill_resume_equals_one_process(jax_only_model, tmp_path):
    from tarka_jax import Embedder
    from tarka_jax.corpus.store import read_embeddings, read_manifest, shard_ok

    texts = [f"text number {i} " + "word " * (i % 7) for i in range(1600)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out"
    args = ["--model", jax_only_model, "--input", str(corpus), "--output", str(out),
            "--document", "--shard-size", str(SHARD), "--batch-size", "8", "--no-progress"]
    shards = len(texts) // SHARD

    procs = launch(args, 2, free_port())
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            done = [n for n in shard_files(out)] if out.is_dir() else []
            owners = {int(n[6:12]) % 2 for n in done}
            if len(done) >= 4 and owners == {0, 1}:
                break
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.02)
        for p in procs:
            p.send_signal(signal.SIGKILL)
    finally:
        finish(procs)
    manifest = read_manifest(str(out))
    before = shard_files(out)
    assert not manifest["complete"] and len(before) < shards, "the kill came too late"
    assert all(shard_ok(str(out), manifest, int(n[6:12])) for n in before)  # none partial

    results = finish(launch([*args, "--resume"], 2, free_port()))
    assert [rc for rc, _ in results] == [0, 0], [err[-3000:] for _, err in results]
    after = shard_files(out)
    assert sorted(after) == [f"shard-{k:06d}.npy" for k in range(shards)]
    assert all(after[n] == before[n] for n in before)  # finished shards were not redone
    assert not [n for n in os.listdir(out) if "tmp" in n]
    manifest = read_manifest(str(out))
    assert manifest["complete"] and manifest["shards_done"] == shards

    want = Embedder.from_pretrained(jax_only_model).encode_document(texts)
    np.testing.assert_allclose(read_embeddings(out), want, rtol=0, atol=1e-6)

    # one process may resume a two-process run, but not with another prompt
    query_args = ["--query" if a == "--document" else a for a in args]
    [(rc, err)] = finish(launch([*query_args, "--resume"], 1))
    assert rc == 2 and "--resume refused" in err and "prompt" in err, err[-2000:]

"""embed-corpus throughput (records/s) and peak RSS, with 1 or more real processes.

    python benchmarks/corpus_throughput.py --model builtin:demo-mini --records 20000 --processes 1 2
    python benchmarks/corpus_throughput.py --model tiny --records 100000 1000000 --processes 1

Generates a corpus of short texts (5-12 words drawn from a fixed vocabulary, seeded), runs
``python -m tarka_jax embed-corpus`` (what ``tarka-jax embed-corpus`` runs) as P processes
on 127.0.0.1 and reports, per (records, P): wall time from launch to the last exit
(process start, model load and compiles included), records/s over that wall time, and the
largest peak RSS of any process (``ru_maxrss`` from ``os.wait4``). ``--model tiny`` writes a
random 2-layer model (hidden 48, 24-d) so the 10^6-record memory run stays short.
Results go into BENCHMARKS.md by hand, with the machine and the command.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

_WORDS = ("the of and to in is was for on that with by as at from his her an be which or "
         "model corpus vector search shard text query document embedding token layer "
         "attention process device memory record stream index result batch")


def write_corpus(path: str, n: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array(_WORDS.split())
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            lengths = rng.integers(5, 13, size=m)
            picks = rng.integers(0, len(words), size=(m, 12))
            f.writelines(" ".join(words[picks[i, :lengths[i]]]) + "\n" for i in range(m))


def tiny_model(folder: str) -> str:
    from tarka_jax.testing.tiny import tiny_config, write_model

    path = os.path.join(folder, "tiny")
    write_model(path, tiny_config(211, 48, 2, (24,)), seed=3)
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(model: str, corpus: str, out: str, processes: int, args) -> tuple[float, int]:
    """(wall seconds, max peak RSS in bytes) of one embed-corpus run on ``processes``."""
    port = _port()
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    base = [sys.executable, "-m", "tarka_jax", "embed-corpus", "--model", model, "--input", corpus,
            "--output", out, "--shard-size", str(args.shard_size), "--batch-size",
            str(args.batch_size), "--document", "--no-progress"]
    t0 = time.perf_counter()
    procs = []
    for i in range(processes):
        extra = [] if processes == 1 else ["--coordinator-address", f"127.0.0.1:{port}",
                                           "--num-processes", str(processes),
                                           "--process-id", str(i)]
        procs.append(subprocess.Popen(base + extra, env=env))
    peak, failed = 0, []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        peak = max(peak, usage.ru_maxrss * 1024)  # KiB on Linux
        if p.returncode:
            failed.append(p.returncode)
    if failed:
        raise SystemExit(f"embed-corpus failed: exit codes {failed}")
    return time.perf_counter() - t0, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:demo-mini", help="a model, or 'tiny'")
    ap.add_argument("--records", type=int, nargs="+", default=[20_000])
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(tmp) if args.model == "tiny" else args.model
        print(f"model {args.model}, shard size {args.shard_size}, batch size {args.batch_size}")
        print(f"{'records':>9} {'procs':>5} {'wall s':>8} {'records/s':>10} {'peak RSS MiB':>13}")
        for n in args.records:
            corpus = os.path.join(tmp, f"corpus-{n}.txt")
            write_corpus(corpus, n)
            for p in args.processes:
                out = os.path.join(tmp, f"out-{n}-{p}")
                wall, peak = run_job(model, corpus, out, p, args)
                print(f"{n:>9} {p:>5} {wall:>8.1f} {n / wall:>10.0f} {peak / 2**20:>13.0f}",
                      flush=True)
                subprocess.run(["rm", "-rf", out], check=True)


if __name__ == "__main__":
    main()

"""Bounded memory: peak RSS of a subprocess on a large generated corpus vs a small one.

Not a timing: the bound is on bytes. A reader or job that held the corpus (or its outputs)
in memory would grow with the input; streaming keeps the peak flat. The bound is generous
(noise between two runs of the same program is a few MiB) and still far below what holding
the large corpus would cost.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

MiB = 2**20
TIMEOUT = 600

READ_ALL = """
import sys
from tarka_jax.corpus.reader import describe_inputs, iter_records
paths = sys.argv[1:]
describe_inputs(paths)
n = sum(1 for _ in iter_records(paths))
print(n)
"""


def _peak_rss(args: list[str], tmp_path) -> tuple[int, str]:
    """(peak RSS in bytes, stdout) of ``python ARGS``, from this child's own rusage."""
    import threading

    env = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false")
    with open(tmp_path / "out.txt", "w+") as out, open(tmp_path / "err.txt", "w+") as err:
        proc = subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=err)
        watchdog = threading.Timer(TIMEOUT, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        assert proc.returncode == 0, err.read()[-3000:]
        return usage.ru_maxrss * 1024, out.read()  # ru_maxrss: KiB on Linux


def _lines(path, n: int, width: int, words: bool = False) -> None:
    body = "lorem ipsum dolor sit amet " * width if words else "x" * width
    line = body[:width - 8] + "\n"
    with open(path, "w") as f:
        for i in range(0, n, 10_000):
            f.writelines(f"{j:07d} {line}" for j in range(i, min(n, i + 10_000)))


def test_reader_streams_a_large_corpus_in_flat_memory(tmp_path):
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    _lines(small, 1_000, 200)
    _lines(large, 600_000, 200)  # ~120 MB: held as str it would add > 140 MiB
    base, out = _peak_rss(["-c", READ_ALL, str(small)], tmp_path)
    assert out.strip() == "1000"
    peak, out = _peak_rss(["-c", READ_ALL, str(large)], tmp_path)
    assert out.strip() == "600000"
    assert peak <= base + 32 * MiB, (base / MiB, peak / MiB)


@pytest.mark.slow
def test_embed_corpus_peak_rss_flat_from_1k_to_20k_records(jax_only_model, tmp_path):
    def job(n: int) -> int:
        corpus = tmp_path / f"c{n}.txt"
        _lines(corpus, n, 2000, words=True)  # cut to 16 tokens: cheap to embed, big to hold
        peak, _ = _peak_rss(["-m", "tarka_jax", "embed-corpus", "--model", jax_only_model,
                             "--input", str(corpus), "--output", str(tmp_path / f"o{n}"),
                             "--shard-size", "1000", "--max-seq-length", "16",
                             "--no-progress"], tmp_path)
        return peak

    small = job(1_000)
    large = job(20_000)  # 40 MB of text: holding it alone would add > 38 MiB
    print(f"peak RSS: 1k records {small / MiB:.0f} MiB, 20k records {large / MiB:.0f} MiB")
    assert large <= small + 24 * MiB, (small / MiB, large / MiB)

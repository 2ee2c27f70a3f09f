"""Load-to-ready of a model folder against the time to read its safetensors bytes.

Every measurement is a fresh process (a model is loaded once per process in real use; a second
load in the same process reuses freed memory and looks faster than any user sees). Each child
first reads the safetensors bytes into one reused 16 MiB buffer (``read``: what a warm page
cache delivers, no new memory), then times one step, the first of its kind in the process:

* ``read_new``: the same bytes into new memory (every page faulted in once: the floor of any
  load that owns its weights),
* ``weights``: ``open_model`` (header checks, reading, transposes, the NaN/inf check),
* ``ready``: ``weights`` + the params placed on the default device and ready
  (``block_until_ready``): the goal is ``ready`` <= 3x ``read``,
* ``tokenizer``: the folder's tokenizer alone,
* ``from_pretrained``: the whole ``Embedder.from_pretrained`` (weights + tokenizer + placement),
* ``st`` (``--st``): ``sentence_transformers.SentenceTransformer(folder)``, for scale.

    python benchmarks/model_load.py --folder DIR [--rounds 3] [--st] [--code CHECKOUT] [--json OUT]

Each row also has the step's CPU seconds (user + system) and minor page faults, which the
shared machine's noise moves less than wall time. ``--code`` imports tarka_jax from another checkout (e.g. ``git archive`` of an older commit,
with ``tarka_jax/convert`` and ``tarka_jax/kernels`` linked to its ``convert/`` and
``kernels/``) instead of the installed one: "before" rows measured the same way (only public
names are used). Rounds interleave the steps, so machine noise spreads over all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

STEPS = ("read_new", "weights", "ready", "tokenizer", "from_pretrained")


def _read_reused(path: str) -> None:
    buf = memoryview(bytearray(16 << 20))
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def _step(name: str, folder: str):
    """The callable a child times (imports done before the clock starts)."""
    weights = os.path.join(folder, "model.safetensors")
    if name == "read_new":
        def read_new():
            with open(weights, "rb", buffering=0) as f:
                return f.read()
        return read_new
    if name == "st":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(os.cpu_count() or 1)
        return lambda: SentenceTransformer(folder, device="cpu")
    import jax

    from tarka_jax import Embedder, TextTokenizer
    from tarka_jax.convert import open_model

    return {"weights": lambda: open_model(folder),
            "ready": lambda: jax.block_until_ready(jax.device_put(open_model(folder).params)),
            "tokenizer": lambda: TextTokenizer.from_folder(folder),
            "from_pretrained": lambda: jax.block_until_ready(
                Embedder.from_pretrained(folder).params)}[name]


def _child(name: str, folder: str) -> None:
    fn = _step(name, folder)
    weights = os.path.join(folder, "model.safetensors")
    start = time.perf_counter()
    _read_reused(weights)
    read = time.perf_counter() - start
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    result = fn()  # kept until the clock stops: freeing 1.2 GB is not part of loading
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    del result
    print(json.dumps({"read": read, "step": seconds, "faults": after.ru_minflt - before.ru_minflt,
                      "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", required=True, help="a sentence-transformers / HF model folder")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--st", action="store_true", help="also time sentence-transformers' load")
    p.add_argument("--code", default=None, help="import tarka_jax from this checkout")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    folder = os.path.expanduser(args.folder)
    if args.code:  # ahead of an editable install's finder, which outranks sys.path
        sys.meta_path[:] = [f for f in sys.meta_path if "Editable" not in type(f).__name__]
        sys.path.insert(0, os.path.abspath(args.code))
    if args.child:
        return _child(args.child, folder)

    _read_reused(os.path.join(folder, "model.safetensors"))  # warm the page cache
    steps = STEPS + (("st",) if args.st else ())
    rows: dict[str, list] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name in steps:
            cmd = [sys.executable, os.path.abspath(__file__), "--folder", folder, "--child", name]
            cmd += ["--code", args.code] if args.code else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows[name].append(json.loads(out.strip().splitlines()[-1]))
    reads = [r["read"] for runs in rows.values() for r in runs]
    print(f"{os.path.getsize(os.path.join(folder, 'model.safetensors')) / 1e9:.2f} GB of "
          f"safetensors; read (reused buffer, in each child) median {statistics.median(reads):.3f}"
          f" s; seconds, median of {args.rounds} (min-max); ratio = median of step / read in the"
          " same process")
    summary = {}
    for name, runs in rows.items():
        times = [r["step"] for r in runs]
        ratio = statistics.median(r["step"] / r["read"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        faults = statistics.median(r["faults"] for r in runs)
        summary[name] = {"median_s": statistics.median(times), "ratio_to_read": ratio,
                         "cpu_s": cpu, "page_faults": faults}
        print(f"{name:16s}{statistics.median(times):8.3f}  ({min(times):.3f}-{max(times):.3f})"
              f"{ratio:8.1f}x  cpu {cpu:6.2f} s  faults {faults / 1e3:7.0f}k")
    if args.json:
        import jax

        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M"), "folder": folder,
                       "code": args.code or "installed", "python": sys.version.split()[0],
                       "jax": jax.__version__, "rounds": rows, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()

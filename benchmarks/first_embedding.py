"""Time to the first embedding of a new ``tarka-jax embed`` process: cold cache, warm cache, off.

Each run is a fresh Python process that calls the real CLI
(``tarka_jax.cli.main(["embed", ...])``) on one query, with
``TARKA_JAX_COMPILATION_CACHE`` pointing at a new directory (cold), the same
directory again (warm), and ``0`` (cache off). The process reports where its
seconds went from jax's own monitoring events (Python tracing, lowering to
MLIR, XLA compile, reading the persistent cache) and the weights' load
(reading the safetensors, transposing to Flax layout, the shape check) beside
the wall time from interpreter start to the embedding on disk.

    python benchmarks/first_embedding.py [--layers 24] [--folder DIR] [--json OUT]
    python benchmarks/first_embedding.py --model DIR [--code CHECKOUT] [--json OUT]

The model is the same random full-size Tarka-shaped folder as
``benchmarks/cpu_encode.py`` builds (24 layers; ``--layers`` for a quick look), or with
``--model`` a model folder you have (e.g. the real EmbeddingGemma: 1.2 GB, 262k-token
vocabulary), used as it is. ``--code`` runs the children on another checkout's tarka_jax
(as ``benchmarks/model_load.py --code``: "before" rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_encode import full_size_reference  # noqa: E402

# Runs inside the child: install a listener on jax's duration events, then the real CLI.
_CHILD = r"""
import json, os, sys, time
start = time.perf_counter()
if os.environ.get("TARKA_BENCH_CODE"):  # another checkout, ahead of the editable install
    sys.meta_path[:] = [f for f in sys.meta_path if "Editable" not in type(f).__name__]
    sys.path.insert(0, os.environ["TARKA_BENCH_CODE"])
import jax.monitoring
durations = {}
def _listen(event, seconds, **kwargs):
    durations[event] = durations.get(event, 0.0) + seconds
jax.monitoring.register_event_duration_secs_listener(_listen)
imported = time.perf_counter()
import tarka_jax.convert.sources as sources  # time the weights' load: read, transpose, check
_load_hf_folder = sources.load_hf_folder
def _timed_load(*args, **kwargs):
    begin = time.perf_counter()
    try:
        return _load_hf_folder(*args, **kwargs)
    finally:
        durations["weights_load"] = time.perf_counter() - begin
sources.load_hf_folder = _timed_load
from tarka_jax.cli import main
status = main(sys.argv[2:])
done = time.perf_counter()
from tarka_jax.runtime import program_cache
programs = program_cache.active()
with open(sys.argv[1], "w") as f:
    json.dump({"status": status, "wall_s": done - start, "import_jax_s": imported - start,
               "events": durations, "programs": dict(programs.stats) if programs else None}, f)
"""

PHASES = {  # event name -> column
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "compile_s",
}


def run_once(folder: str, cache: str, text: str, code: str | None = None) -> dict:
    """One fresh ``tarka-jax embed`` process; its timings (wall from before ``python`` starts)."""
    with tempfile.TemporaryDirectory() as tmp:
        report, out = os.path.join(tmp, "report.json"), os.path.join(tmp, "emb.npy")
        env = dict(os.environ, TARKA_JAX_COMPILATION_CACHE=cache,
                   TARKA_BENCH_CODE=os.path.abspath(code) if code else "")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", _CHILD, report, "embed", "--model", folder,
                        "--query", "-o", out, text], env=env, check=True)
        process_s = time.perf_counter() - start
        with open(report) as f:
            child = json.load(f)
    row = {"process_wall_s": process_s, "in_python_s": child["wall_s"],
           "programs": child["programs"]}  # exported / loaded forward programs (None: off)
    for event, column in PHASES.items():
        row[column] = child["events"].get(event, 0.0)
    row["load_s"] = child["events"].get("weights_load", 0.0)
    row["cache_events"] = {k: v for k, v in child["events"].items()
                           if "cache" in k and not k.endswith("_time_saved_sec")}
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=24, help="24 = full size")
    p.add_argument("--max-seq-length", type=int, default=2048)
    p.add_argument("--folder", default=None, help="where the random model is built")
    p.add_argument("--model", default=None, help="use this model folder as it is (no building)")
    p.add_argument("--code", default=None, help="run the children on this checkout's tarka_jax")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    folder = os.path.expanduser(args.model) if args.model else full_size_reference(
        args.folder or f"/tmp/tarka_jax_bench_{args.layers}l", args.max_seq_length, args.layers)
    text = "how do I read a file line by line"
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        rows["cold cache"] = run_once(folder, os.path.join(cache, "jax"), text, args.code)
        rows["warm cache"] = run_once(folder, os.path.join(cache, "jax"), text, args.code)
    rows["cache off"] = run_once(folder, "0", text, args.code)
    print(f"{'run':12s}{'wall s':>8s}{'load s':>8s}{'trace s':>9s}{'lower s':>9s}{'compile s':>11s}")
    for name, row in rows.items():
        print(f"{name:12s}{row['process_wall_s']:8.1f}{row['load_s']:8.2f}{row['trace_s']:9.2f}"
              f"{row['lower_s']:9.2f}{row['compile_s']:11.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M"), "layers": args.layers,
                       "model": folder, "code": args.code or "installed", "rows": rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()

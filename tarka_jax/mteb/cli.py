"""``tarka-jax mteb``: run MTEB tasks on a tarka-jax model and print a per-task table.

    tarka-jax mteb --model M (--tasks NAME,... | --benchmark NAME | --task-module FILE.py)
                   --output-folder DIR [--dtype float32|bfloat16] [--batch-size N]

Tasks come from mteb's registry (``--tasks``, ``--benchmark``) or from local
task classes in a Python file (``--task-module``; ``--tasks`` then picks among
them). Every task's data is loaded before any model work, so a task whose data
is neither cached nor reachable (offline) is reported by name and skipped, and
the exit status is 1. mteb's own result cache is off unless ``--reuse-results``:
each run recomputes and writes ``DIR/<model>/<revision>/<task>.json`` (mteb's
TaskResult format) plus ``DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import sys

from tarka_jax.errors import UsageError
from tarka_jax.mteb.results import ResultsFolder
from tarka_jax.runtime.command import Command
from tarka_jax.runtime.extras import require
from tarka_jax.text import chunking


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True,
                   help="model folder (sentence-transformers, HF or hf_to_flax), hub id or "
                        "builtin:NAME")
    p.add_argument("--tasks", default=None,
                   help="comma-separated mteb task names (with --task-module: a selection "
                        "of its tasks)")
    p.add_argument("--benchmark", default=None, help='an mteb benchmark, e.g. "MTEB(eng, v2)"')
    p.add_argument("--task-module", default=None,
                   help="a .py file defining mteb task classes (AbsTask subclasses)")
    p.add_argument("--output-folder", "-o", required=True, help="where results are written")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.add_argument("--max-seq-length", type=int, default=None,
                   help="truncate texts to this many tokens (default: the model's)")
    p.add_argument("--attention", default=None, help="attention implementation (default: best)")
    p.add_argument("--revision", default=None, help="hub revision")
    chunking.add_arguments(p, modes=("truncate", "mean"))
    p.add_argument("--reuse-results", action="store_true",
                   help="use mteb's result cache in the output folder: skip tasks already "
                        "scored there")


# ---- tasks ---------------------------------------------------------------------------------


def load_task_module(path: str) -> list:
    """Instances of the concrete mteb task classes a Python file defines."""
    from mteb.abstasks import AbsTask

    if not os.path.isfile(path):
        raise FileNotFoundError(f"task module not found: {path}")
    name = "_tarka_mteb_tasks_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses / pydantic look their module up
    spec.loader.exec_module(module)
    classes = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
               if issubclass(obj, AbsTask) and obj.__module__ == name
               and not inspect.isabstract(obj) and hasattr(obj, "metadata")]
    if not classes:
        raise UsageError(f"{path} defines no mteb task class (a subclass of an mteb AbsTask* "
                         "with a metadata = TaskMetadata(...))")
    return [cls() for cls in classes]


def select_tasks(tasks_arg: str | None, benchmark: str | None, task_module: str | None) -> list:
    """The task objects the three options name (exactly one source)."""
    import mteb

    names = [t.strip() for t in tasks_arg.split(",") if t.strip()] if tasks_arg else None
    if benchmark and (names or task_module):
        raise UsageError("--benchmark cannot be combined with --tasks or --task-module")
    if benchmark:
        return list(mteb.get_benchmark(benchmark).tasks)
    if task_module:
        tasks = load_task_module(task_module)
        if names:
            by_name = {t.metadata.name: t for t in tasks}
            missing = [n for n in names if n not in by_name]
            if missing:
                raise UsageError(f"{task_module} has no task {missing}; it has {sorted(by_name)}")
            tasks = [by_name[n] for n in names]
        return tasks
    if names:
        return list(mteb.get_tasks(tasks=names))
    raise UsageError("give --tasks, --benchmark or --task-module")


def load_data(tasks: list) -> tuple[list, dict[str, str]]:
    """(tasks whose data loaded, {task name: why not}) -- nothing downloads mid-evaluation."""
    ready, failed = [], {}
    for task in tasks:
        try:
            task.load_data()
            ready.append(task)
        except Exception as e:  # noqa: BLE001 -- datasets / hub errors, offline, missing files
            path = (task.metadata.dataset or {}).get("path", "?")
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
            hint = (" (offline mode is on: the data must already be in the Hugging Face "
                    "datasets cache)" if offline else " (is the hub reachable?)")
            failed[task.metadata.name] = (f"data not reachable: dataset {path!r} could not be "
                                          f"loaded{hint}: {type(e).__name__}: {first}")
    return ready, failed


# ---- run -----------------------------------------------------------------------------------


def result_rows(model_result, tasks: list) -> list[dict]:
    """One row per task: name, type, main score name and value (mean over splits/subsets)."""
    by_name = {t.metadata.name: t for t in tasks}
    rows = []
    for tr in model_result.task_results:
        meta = by_name[tr.task_name].metadata
        rows.append({"task": tr.task_name, "type": meta.type, "main_score": meta.main_score,
                     "value": float(tr.get_score())})
    return rows


def format_rows(rows: list[dict], failed: dict[str, str]) -> str:
    width = max([len(r["task"]) for r in rows] + [len(n) for n in failed] + [4])
    lines = [f"{'task':<{width}}  {'type':<20} {'main score':<18} {'value':>8}"]
    for r in rows:
        lines.append(f"{r['task']:<{width}}  {r['type']:<20} {r['main_score']:<18} "
                     f"{r['value']:>8.4f}")
    for name, why in failed.items():
        lines.append(f"{name:<{width}}  FAILED: {why}")
    return "\n".join(lines)


def run(args) -> int:
    mteb = require("mteb", "tarka-jax mteb")
    from tarka_jax.mteb.encoder import TarkaEncoder

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    tasks = select_tasks(args.tasks, args.benchmark, args.task_module)
    tasks, failed = load_data(tasks)
    model = TarkaEncoder(args.model, args.revision, dtype=args.dtype, attention=args.attention,
                         batch_size=args.batch_size, max_seq_length=args.max_seq_length,
                         **chunking.from_arguments(args).encode_kwargs())
    out = ResultsFolder(args.output_folder)
    try:
        rows = _evaluate(mteb, model, tasks, failed, out, args)
    finally:
        out.close()
    print(format_rows(rows, failed))
    return 1 if failed else 0


def _task_json(task_result) -> bytes:
    """mteb's own file format (``TaskResult.to_disk``), as bytes for an atomic write."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.json"
        task_result.to_disk(path)
        return path.read_bytes()


def _evaluate(mteb, model, tasks, failed, out, args) -> list[dict]:
    """Run mteb, write each task's result and summary.json (only files we may replace)."""
    meta = model.mteb_model_meta
    sub = f"{meta.name.replace('/', '__')}/{meta.revision}"
    cache = mteb.ResultCache(cache_path=out.folder) if args.reuse_results else None
    out.check(["summary.json"] + ([] if cache else [f"{sub}/{t.metadata.name}.json"
                                                  for t in tasks]))
    result = mteb.evaluate(model, tasks, cache=cache, raise_error=False,
                           overwrite_strategy="only-missing" if cache else "always",
                           encode_kwargs={"batch_size": args.batch_size},
                           show_progress_bar=False) if tasks else None
    rows = []
    if result is not None:
        for err in result.exceptions:
            failed[err.task_name] = err.exception.strip().splitlines()[0]
        if cache is None:
            for tr in result.task_results:
                out.write(f"{sub}/{tr.task_name}.json",
                          lambda w, tr=tr: w.write(_task_json(tr)))
        rows = result_rows(result, tasks)
    summary = {"model": meta.name, "revision": meta.revision, "dtype": args.dtype,
               "tasks": rows, "failed": failed}
    out.write("summary.json", lambda w: w.write(json.dumps(summary, indent=2).encode()))
    return rows


COMMAND = Command("mteb", "run MTEB tasks on a model (needs the mteb extra)", add_arguments, run,
                  description=__doc__.strip().splitlines()[0])

"""Compile tarka-jax's TPU and GPU programs ahead of time, without the hardware; report memory and FLOPs.

For each topology (benchmarks/accelerator_targets.py: TPU v5e-8, v6e-8, v5p-16 (two
hosts); GPU 8 x A100-80GB, 8 x H100, and two hosts of 8), the real XLA:TPU / XLA:GPU
compiler builds, from compile-only devices:

* the Embedder's forward per attention implementation of the platform, at the largest
  pass and a typical pass the planner emits at max_seq_length 2048 (bfloat16);
* one distillation step (Tarka student + online EmbeddingGemma teacher, FSDP mesh);
* one fine-tuning step (cached MNRL, the global batch's negatives).

One JSON line per program: compiled (or the compiler's error), per-chip argument /
output / temp bytes from ``memory_analysis()`` and the peak against the chip's usable
HBM, FLOPs per chip (counted: benchmarks/accelerator_flops.py says why XLA's
``cost_analysis`` is not used as the count; its number is kept as ``xla_flops``), a
roofline time ``max(executed FLOPs / peak, bytes / bandwidth)`` with the vendor's
published peak (accelerator_targets.CHIPS), tokens/s per chip at that time, and the
MFU ceiling (useful FLOPs / (peak x roofline time)). Nothing here runs on hardware.

    # TPU: Python 3.12 venv with `pip install "jax[tpu]"` (libtpu)
    python benchmarks/accelerator_compile.py --platform tpu [--topology v5e-8] --json tpu.jsonl
    # GPU: the CUDA-compile venv (ci/constraints-cuda-compile.txt)
    python benchmarks/accelerator_compile.py --platform gpu --json gpu.jsonl
    # CI (ci/accelerator_legs.sh): a reduced model, fail on a compile error or HBM overflow
    python benchmarks/accelerator_compile.py --platform tpu --layers 2 --check ...
    python benchmarks/accelerator_compile.py --table tpu.jsonl gpu.jsonl   # markdown tables

``--layers L`` (< 24) compiles a reduced model; the HBM check then uses the exact
24-layer argument bytes (from shapes) and the temp bytes scaled by 24 / L, so a
program that would overflow at full depth still fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile for the topology; run nothing
os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")

from accelerator_report import table, with_roofline  # noqa: E402
from accelerator_targets import CHIPS, IMPLEMENTATIONS, TOPOLOGIES  # noqa: E402

FULL_LAYERS = 24


def abstract_bytes(tree) -> int:
    """Bytes one chip holds of a tree of sharded ShapeDtypeStructs (its shard of each leaf)."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape)
        total += int(np.prod(shape, dtype=np.int64)) * leaf.dtype.itemsize
    return total


def program_specs(args, platform: str) -> list[tuple]:
    """(kind, implementation, shape name) in compile order."""
    impls = args.implementations or IMPLEMENTATIONS[platform]
    specs = [("forward", impl, shape) for shape in args.shapes for impl in impls]
    train_impl = args.train_attention or impls[0]
    specs += [(kind, train_impl, "") for kind in ("distill", "finetune") if kind in args.programs]
    return [s for s in specs if s[0] in args.programs]


def build(kind: str, impl: str, shape: str, devices, args, layers: int):
    import accelerator_programs as programs

    student, teacher = programs.models(layers)
    n = len(devices)
    if kind == "forward":
        rows, width, segments = programs.planner_shapes(student, n, args.max_length)[shape]
        return programs.forward(devices, student, impl, rows, width, segments)
    if kind == "distill":
        return programs.distill(devices, student, teacher, impl, args.distill_batch_per_chip * n,
                                args.distill_seq, args.fsdp or n, args.remat)
    return programs.finetune(devices, student, impl, args.finetune_batch_per_chip * n,
                             tuple(args.finetune_seqs), args.finetune_mini_per_chip * n,
                             args.fsdp or n, args.remat)


def compile_one(topology, devices, kind, impl, shape, args) -> dict:
    import jax

    row = {"platform": topology.platform, "topology": topology.key, "slice": topology.name,
           "hosts": topology.hosts, "chips": topology.chips, "program": kind,
           "implementation": impl, "shape_name": shape, "layers": args.layers,
           "jax": jax.__version__}
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        program = build(kind, impl, shape, devices, args, args.layers)
        row.update(shape=program.shape, settings=program.settings, tokens=program.tokens,
                   useful_flops=program.flops["useful"], executed_flops=program.flops["executed"])
        if args.layers != FULL_LAYERS:  # exact full-depth arguments, for the HBM check
            full = build(kind, impl, shape, devices, args, FULL_LAYERS)
            row["arguments_bytes_full_depth"] = abstract_bytes(full.args)
        with jax.set_mesh(program.mesh):  # the kernels see the target platform and mesh
            compiled = program.fn.trace(*program.args).lower().compile()
        row["compile_s"] = round(time.perf_counter() - start, 1)
        # CPU seconds of this process: what the compile costs on a quiet machine (the
        # wall time above stretches with the machine's other load).
        row["compile_cpu_s"] = round(time.process_time() - cpu_start, 1)
        mem = compiled.memory_analysis()
        for name in ("argument", "output", "alias", "temp", "generated_code"):
            row[f"{name}_bytes"] = int(getattr(mem, f"{name}_size_in_bytes"))
        cost = compiled.cost_analysis()
        cost = (cost[0] if isinstance(cost, list) and cost else cost) or {}
        row["xla_flops"] = float(cost.get("flops", -1.0))
        row["xla_bytes_accessed"] = float(cost.get("bytes accessed", -1.0))
        row["compiled"] = True
        del compiled, program
    except Exception as err:  # noqa: BLE001  (the compiler's error is the result)
        row["compiled"] = False
        row["compile_s"] = round(time.perf_counter() - start, 1)
        row["compile_cpu_s"] = round(time.process_time() - cpu_start, 1)
        row["error"] = f"{type(err).__name__}: {str(err)[:1500]}"
    jax.clear_caches()
    gc.collect()
    return with_roofline(row, CHIPS[topology.chip], FULL_LAYERS)


def problems(row: dict) -> list[str]:
    """What --check refuses: a compile error, or a (full-depth) peak over the usable HBM."""
    if not row["compiled"]:
        return [row["error"].splitlines()[0][:300]]
    if row["hbm_fraction"] > 1.0:
        return [f"HBM overflow: {row['peak_bytes'] / 2**30:.2f} GiB per chip > "
                f"{row['hbm_usable_bytes'] / 2**30:.2f} GiB usable"]
    return []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--platform", choices=("tpu", "gpu"))
    p.add_argument("--topology", action="append", choices=sorted(TOPOLOGIES))
    p.add_argument("--programs", default="forward,distill,finetune")
    p.add_argument("--shapes", default="largest,typical")
    p.add_argument("--implementations", default=None, help="comma list (default: the platform's)")
    p.add_argument("--train-attention", default=None, help="training steps' (default: first)")
    p.add_argument("--layers", type=int, default=FULL_LAYERS)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--distill-batch-per-chip", type=int, default=32)
    p.add_argument("--distill-seq", type=int, default=512)
    p.add_argument("--finetune-batch-per-chip", type=int, default=64)
    p.add_argument("--finetune-seqs", default="64,256", help="anchor,positive[,negative...]")
    p.add_argument("--finetune-mini-per-chip", type=int, default=16)
    p.add_argument("--fsdp", type=int, default=0, help="fsdp axis size (default: every chip)")
    p.add_argument("--remat", action="store_true", help="training steps recompute each layer")
    p.add_argument("--json", default=None, help="append one JSON line per program here")
    p.add_argument("--check", action="store_true", help="exit 1 on a compile error or overflow")
    p.add_argument("--table", nargs="+", default=None, help="JSONL files -> markdown tables")
    args = p.parse_args(argv)
    if args.table:
        rows = [json.loads(line) for path in args.table for line in open(path) if line.strip()]
        # The HBM check and roofline again from the row's compiler numbers and today's chip
        # facts (accelerator_targets.py), so a corrected chip figure reaches old rows too.
        print(table([with_roofline(row, CHIPS[TOPOLOGIES[row["topology"]].chip], FULL_LAYERS)
                     for row in rows]))
        return 0
    if not args.platform:
        p.error("--platform is required (or --table)")
    args.programs = args.programs.split(",")
    args.shapes = args.shapes.split(",")
    args.finetune_seqs = [int(x) for x in args.finetune_seqs.split(",")]
    if args.implementations:
        args.implementations = tuple(args.implementations.split(","))
    from accelerator_targets import compile_only_devices

    topologies = [TOPOLOGIES[k] for k in (args.topology or TOPOLOGIES)
                  if TOPOLOGIES[k].platform == args.platform]
    bad = []
    for topology in topologies:
        devices = compile_only_devices(topology)
        for kind, impl, shape in program_specs(args, args.platform):
            row = compile_one(topology, devices, kind, impl, shape, args)
            line = json.dumps(row)
            print(line, flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(line + "\n")
            bad += [f"{topology.key} {kind} {impl} {shape}: {x}" for x in problems(row)]
    if args.check and bad:
        print("\n".join(["FAILED:", *bad]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""JAX side of benchmarks/gpu_check.sh: real-size kernel checks, timings, the summary table.

  python benchmarks/gpu_attention.py compile RESULTS_DIR [--dry-run]
  python benchmarks/gpu_attention.py check  RESULTS_DIR [--dry-run]
  python benchmarks/gpu_attention.py bench  RESULTS_DIR [--dry-run] [--sweep]
  python benchmarks/gpu_attention.py sweep  RESULTS_DIR [--dry-run]
  python benchmarks/gpu_attention.py report RESULTS_DIR

``compile``: jit-compile pallas_triton forward and forward+backward at
B=32, T=2048 (window and full layer), with this GPU's table and the sm80 one,
without running them: a Triton compile failure stops gpu_check.sh first.
``check``: pallas_triton (compiled, not interpreted) at real sizes vs XLA in
float32 on the same values: output and the three gradients, padding exactly 0,
no NaN/Inf, two runs bit-identical. ``bench``: forward and forward+backward
times for pallas_triton, XLA, ``xla_blocked`` (when the dispatcher has it) and
cuDNN (``jax.nn.dot_product_attention``; a
window only as a dense mask), TFLOP/s over allowed pairs; ``--sweep`` also
times a few block configurations for the block table. ``report``: one table
from these and ``attention_torch.json`` (gpu_torch_attention.py).
``--dry-run``: tiny sizes on CPU, Pallas in interpret mode, no cuDNN.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_common as common

if "--dry-run" in sys.argv or os.environ.get("DRY_RUN") == "1":
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax
import jax.numpy as jnp

from tarka_jax.kernels import attention, available_implementations, block_sizes, gpu_arch
from tarka_jax.kernels.pallas_triton import attention_pallas_triton

START = time.time()
BUDGET_S = float(os.environ.get("BUDGET_S", "90"))  # for this script's bench + sweep


def _inputs(layer: common.Layer, dtype, seed: int = 0):
    key = jax.random.PRNGKey(seed)
    kq, kk, kv, kd = jax.random.split(key, 4)
    q = jax.random.normal(kq, (layer.b, layer.t, layer.hq, layer.d), jnp.float32).astype(dtype)
    k = jax.random.normal(kk, (layer.b, layer.t, layer.hkv, layer.d), jnp.float32).astype(dtype)
    v = jax.random.normal(kv, (layer.b, layer.t, layer.hkv, layer.d), jnp.float32).astype(dtype)
    do = jax.random.normal(kd, (layer.b, layer.t, layer.hq, layer.d), jnp.float32).astype(dtype)
    return q, k, v, do


def _value_and_grads(fn):
    @jax.jit
    def run(q, k, v, do):
        out, vjp = jax.vjp(fn, q, k, v)
        return (out, *vjp(do))

    return run


def _rel_l2(x, ref):
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


# ----------------------------------------------------------------------------- compile
def compile_all(results_dir: str, dry_run: bool) -> bool:
    """Compile (not run) fwd and fwd+bwd for the window and full layers, two tables each."""
    if dry_run:
        layers = [common.Layer("window", 2, 40, 3, 1, 32, (6, 6), False)]
        tables = {"interpret": None}
    else:
        layers = [x for x in common.layers(False) if x.name in ("window", "full")]
        tables = {"default": None, "sm80": "sm80"}
    report, ok = [], True
    for layer in layers:
        seg = jnp.asarray(common.segment_ids(layer))
        shapes = [jax.ShapeDtypeStruct(s, jnp.bfloat16) for s in (
            (layer.b, layer.t, layer.hq, layer.d), (layer.b, layer.t, layer.hkv, layer.d),
            (layer.b, layer.t, layer.hkv, layer.d))]
        for table, arch in tables.items():
            def fn(q, k, v, arch=arch, seg=seg, layer=layer):
                return attention_pallas_triton(q, k, v, seg, window=layer.window,
                                               scale=layer.d**-0.5, interpret=dry_run,
                                               arch=arch)

            def loss(q, k, v, fn=fn):
                return jnp.sum(fn(q, k, v).astype(jnp.float32))

            for pas, step in (("fwd", fn), ("fwd+bwd", jax.grad(loss, argnums=(0, 1, 2)))):
                entry = {"layer": layer.name, "table": table, "pass": pas}
                start = time.time()
                try:
                    jax.jit(step).lower(*shapes).compile()
                    entry.update(ok=True, seconds=round(time.time() - start, 2))
                except Exception as exc:  # noqa: BLE001 - record every failure, then stop
                    entry.update(ok=False, error=common.short_error(exc))
                ok &= entry["ok"]
                report.append(entry)
                print(f"compile {layer.name:8s} {table:9s} {pas:8s} "
                      + ("ok" if entry["ok"] else "FAIL " + entry["error"]), flush=True)
    common.write_json(os.path.join(results_dir, "compile_jax.json"),
                      {"env": _env(), "entries": report, "ok": ok})
    return ok


# ----------------------------------------------------------------------------- check
def check(results_dir: str, dry_run: bool) -> bool:
    if dry_run:
        cases = [("bf16_window_padded", common.Layer("w", 2, 40, 3, 1, 32, (6, 6), True),
                  jnp.bfloat16, 1e-2)]
    else:
        cases = [
            ("bf16_window_padded_32x2048", common.Layer("w", 32, 2048, 3, 1, 256, (256, 256), True),
             jnp.bfloat16, 1e-2),
            ("bf16_full_padded_32x2048", common.Layer("f", 32, 2048, 3, 1, 256, None, True),
             jnp.bfloat16, 1e-2),
            ("bf16_gqa_window_asym_8x1000_d128", common.Layer("g", 8, 1000, 4, 2, 128, (100, 30),
                                                              True), jnp.bfloat16, 1e-2),
        ]
    report, ok = [], True
    for name, layer, dtype, tol in cases:
        entry = {"case": name, "layer": layer.as_dict(), "dtype": jnp.dtype(dtype).name, "tol": tol}
        try:
            seg_np = common.segment_ids(layer)
            seg = jnp.asarray(seg_np)
            q, k, v, do = _inputs(layer, dtype, seed=1)
            ours = _value_and_grads(lambda q, k, v: attention(
                q, k, v, seg, window=layer.window, implementation="pallas_triton"))
            ref = _value_and_grads(lambda q, k, v: attention(
                q, k, v, seg, window=layer.window, implementation="xla"))
            got = jax.device_get(ours(q, k, v, do))
            again = jax.device_get(ours(q, k, v, do))
            up = [x.astype(jnp.float32) for x in (q, k, v, do)]
            want = jax.device_get(ref(*up))
            del up
            errors = {n: _rel_l2(x, w) for n, x, w in zip(("out", "dq", "dk", "dv"), got, want)}
            pad = seg_np == 0
            entry.update(
                rel_l2=errors,
                finite=all(bool(np.isfinite(np.asarray(x, np.float32)).all()) for x in got),
                padding_zero=all(bool((np.asarray(x, np.float32)[pad] == 0).all())
                                 for x in got),
                deterministic=all(bool(np.array_equal(np.asarray(x, np.float32),
                                                      np.asarray(y, np.float32)))
                                  for x, y in zip(got, again)),
            )
            entry["ok"] = (max(errors.values()) <= tol and entry["finite"]
                           and entry["padding_zero"] and entry["deterministic"])
        except Exception as exc:  # noqa: BLE001 - record and go on to the next case
            entry.update(ok=False, error=common.short_error(exc))
        ok &= entry["ok"]
        report.append(entry)
        errs = entry.get("rel_l2", {})
        print(f"check {name:36s} {'ok  ' if entry['ok'] else 'FAIL'} "
              + " ".join(f"{n}={e:.1e}" for n, e in errs.items())
              + (f" {entry.get('error', '')}" if "error" in entry else ""), flush=True)
    common.write_json(os.path.join(results_dir, "checks_jax.json"),
                      {"env": _env(), "cases": report, "ok": ok})
    return ok


# ----------------------------------------------------------------------------- bench
def _cudnn(layer, seg_np, as_bias=False):
    """jax.nn cuDNN attention: lengths for padding; a window only as a dense [B, 1, T, T] mask
    (or, ``as_bias``, an additive bf16 bias, should this cuDNN refuse the boolean mask)."""
    lengths = jnp.asarray((seg_np != 0).sum(axis=1).astype(np.int32))
    mask = None
    if layer.window is not None:
        mask = jnp.asarray(common.dense_mask(layer, seg_np)[:, None])
        if as_bias:
            mask = jnp.where(mask, 0.0, -1e9).astype(jnp.bfloat16)

    def fn(q, k, v):
        if mask is not None and as_bias:
            return jax.nn.dot_product_attention(q, k, v, bias=mask, implementation="cudnn")
        if mask is not None:
            return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
        if layer.padded:
            return jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths,
                                                key_value_seq_lengths=lengths,
                                                implementation="cudnn")
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")

    return fn


def _implementations(layer, seg_np, dry_run, config=None):
    seg = jnp.asarray(seg_np)
    impls = {
        "pallas": lambda q, k, v: attention_pallas_triton(
            q, k, v, seg, window=layer.window, scale=layer.d**-0.5, interpret=dry_run,
            config=config),
        "xla": lambda q, k, v: attention(q, k, v, seg, window=layer.window, implementation="xla"),
    }
    if "xla_blocked" in available_implementations():  # the blocked XLA path, where it exists
        impls["xla_blocked"] = lambda q, k, v: attention(q, k, v, seg, window=layer.window,
                                                         implementation="xla_blocked")
    if not dry_run:
        impls["cudnn"] = _cudnn(layer, seg_np)
    return impls


def _timed(fn, q, k, v, do, backward: bool, quick: bool):
    if backward:
        def loss(q, k, v):
            return jnp.sum(fn(q, k, v).astype(jnp.float32) * do.astype(jnp.float32))

        step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    else:
        step = jax.jit(fn)
    return common.time_calls(lambda: step(q, k, v), jax.block_until_ready, quick=quick)


def bench(results_dir: str, dry_run: bool, sweep: bool) -> None:
    rows = []
    for layer in common.layers(dry_run):
        seg_np = common.segment_ids(layer)
        q, k, v, do = _inputs(layer, jnp.bfloat16)
        for backward in (False, True):
            flops = common.flops(layer, seg_np, backward)
            for impl, fn in _implementations(layer, seg_np, dry_run).items():
                row = {"layer": layer.name, "pass": "fwd+bwd" if backward else "fwd",
                       "impl": impl, "flops": flops, **layer.as_dict()}
                if time.time() - START > BUDGET_S:
                    row["error"] = "skipped: time budget"
                else:
                    try:
                        seconds = _timed(fn, q, k, v, do, backward, dry_run)
                        row.update(ms=seconds * 1e3, tflops=flops / seconds / 1e12)
                    except Exception as exc:  # noqa: BLE001
                        row["error"] = common.short_error(exc)
                    if impl == "cudnn" and "error" in row and layer.window is not None:
                        try:  # the window as an additive bias instead of a boolean mask
                            seconds = _timed(_cudnn(layer, seg_np, as_bias=True), q, k, v, do,
                                             backward, dry_run)
                            row.update(ms=seconds * 1e3, tflops=flops / seconds / 1e12,
                                       variant="bias", mask_error=row.pop("error"))
                        except Exception as exc:  # noqa: BLE001
                            row["error"] += " | bias: " + common.short_error(exc)
                rows.append(row)
                print(f"bench {layer.name:14s} {row['pass']:8s} {impl:7s} "
                      + (f"{row['ms']:9.3f} ms {row['tflops']:9.3g} TFLOP/s" if "ms" in row
                         else row["error"]), flush=True)
    common.write_json(os.path.join(results_dir, "attention_jax.json"),
                      {"env": _env(), "rows": rows})
    if sweep:
        _sweep(results_dir, dry_run)


def _sweep_candidates(dry_run):
    if dry_run:
        return [block_sizes.KernelBlocks(16, 16, 4, 1)]
    return [block_sizes.KernelBlocks(*c) for c in [
        (64, 32, 4, 2), (64, 64, 4, 2), (64, 64, 8, 2), (128, 32, 8, 2), (128, 64, 8, 2),
        (128, 64, 8, 3), (64, 32, 8, 1), (32, 32, 4, 2),
    ]]


def _sweep(results_dir: str, dry_run: bool) -> None:
    """Time a few tile choices for the window and full layers (to freeze the table)."""
    if dry_run:
        base = block_sizes.INTERPRET_CONFIG
    else:
        arch = gpu_arch.device_arch()
        base = block_sizes.block_config(arch, 256, 2)
    rows = []
    sweep_layers = [x for x in common.layers(dry_run) if not x.padded]
    for layer in sweep_layers[:1] if dry_run else sweep_layers:
        seg_np = common.segment_ids(layer)
        q, k, v, do = _inputs(layer, jnp.bfloat16)
        for backward in (False, True):
            flops = common.flops(layer, seg_np, backward)
            for blocks in _sweep_candidates(dry_run):
                if time.time() - START > BUDGET_S:
                    break
                if backward:
                    config = dataclasses.replace(base, dkdv=blocks, dq=blocks)
                else:
                    config = dataclasses.replace(base, fwd=blocks)
                fn = _implementations(layer, seg_np, dry_run, config)["pallas"]
                row = {"layer": layer.name, "pass": "fwd+bwd" if backward else "fwd",
                       "blocks": dataclasses.asdict(blocks)}
                try:
                    seconds = _timed(fn, q, k, v, do, backward, dry_run)
                    row.update(ms=seconds * 1e3, tflops=flops / seconds / 1e12)
                except Exception as exc:  # noqa: BLE001 - e.g. out of shared memory
                    row["error"] = common.short_error(exc)
                rows.append(row)
                print(f"sweep {layer.name:8s} {row['pass']:8s} {tuple(row['blocks'].values())} "
                      + (f"{row['tflops']:9.3g} TFLOP/s" if "ms" in row else row["error"][:120]),
                      flush=True)
    common.write_json(os.path.join(results_dir, "sweep_jax.json"),
                      {"env": _env(), "base": dataclasses.asdict(base), "rows": rows})


# ----------------------------------------------------------------------------- report
def report(results_dir: str) -> None:
    cells, order = {}, []
    for fname in ("attention_jax.json", "attention_torch.json"):
        path = os.path.join(results_dir, fname)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for row in json.load(f)["rows"]:
                key = (row["layer"], row["pass"])
                if key not in order:
                    order.append(key)
                cells[key + (row["impl"],)] = row.get("tflops")
    impls = ["pallas", "xla", "xla_blocked", "cudnn", "sdpa", "flex"]

    def fmt(x):
        return f"{x:8.3g}" if x else "       -"

    def ratio(a, b):
        return f"{a / b:6.2f}x" if a and b else "      -"

    header = (f"{'layer':14s} {'pass':8s} " + " ".join(f"{i[:8]:>8s}" for i in impls)
              + "   pal/cudnn  pal/flex   pal/xla")
    lines = ["TFLOP/s over allowed pairs (bf16; fwd+bwd counted as 3.5x fwd)", header]
    summary = []
    for layer, pas in order:
        vals = {i: cells.get((layer, pas, i)) for i in impls}
        lines.append(f"{layer:14s} {pas:8s} " + " ".join(fmt(vals[i]) for i in impls)
                     + f"   {ratio(vals['pallas'], vals['cudnn']):>9s} "
                     f"{ratio(vals['pallas'], vals['flex']):>9s} "
                     f"{ratio(vals['pallas'], vals['xla']):>9s}")
        summary.append({"layer": layer, "pass": pas, "tflops": vals})
    lines += _goals(cells)
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(results_dir, "table.txt"), "w") as f:
        f.write(text + "\n")
    common.write_json(os.path.join(results_dir, "summary.json"), summary)


def _goals(cells):
    """The issue's H100/H200 goals, read off the table."""
    goals = [  # (layer, pass, baseline, minimum ratio pallas / baseline)
        ("window", "fwd", "cudnn", 1.0), ("window", "fwd+bwd", "cudnn", 1.0),
        ("window", "fwd", "flex", 1.0), ("window", "fwd+bwd", "flex", 1.0),
        ("full", "fwd", "cudnn", 0.6), ("full", "fwd+bwd", "cudnn", 0.8),
    ]
    out = []
    for layer, pas, base, need in goals:
        ours, theirs = cells.get((layer, pas, "pallas")), cells.get((layer, pas, base))
        if ours and theirs:
            verdict = f"{ours / theirs:.2f}x -> {'met' if ours / theirs >= need else 'NOT met'}"
        else:
            verdict = "not measured"
        out.append(f"goal {layer} {pas}: pallas >= {need}x {base}: {verdict}")
    return out


def _env():
    dev = jax.devices()[0]
    try:
        table = gpu_arch.device_arch(dev)
    except NotImplementedError:
        table = None  # CPU (dry run) or a GPU without a table
    return {"jax": jax.__version__, "device": dev.device_kind, "platform": dev.platform,
            "compute_capability": getattr(dev, "compute_capability", None), "arch_table": table}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["compile", "check", "bench", "sweep", "report"])
    parser.add_argument("results_dir")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args(argv)
    dry_run = args.dry_run or os.environ.get("DRY_RUN") == "1"
    os.makedirs(args.results_dir, exist_ok=True)
    if args.command == "compile":
        return 0 if compile_all(args.results_dir, dry_run) else 1
    if args.command == "check":
        return 0 if check(args.results_dir, dry_run) else 1
    if args.command == "bench":
        bench(args.results_dir, dry_run, args.sweep)
    elif args.command == "sweep":
        _sweep(args.results_dir, dry_run)
    else:
        report(args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

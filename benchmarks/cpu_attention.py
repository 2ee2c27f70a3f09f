"""Attention alone on CPU: "xla" (dense) vs "xla_blocked", the shapes the model runs.

3 query heads / 1 KV head, head_dim 256, one packed-free segment per row, window
(256, 256) and full, float32 and bfloat16. Prints one JSON line per shape with
the minimum of ``--repeats`` timed calls (the machine is shared: the minimum is
the least disturbed run) and the achieved GFLOP/s on the allowed pairs.

    python benchmarks/cpu_attention.py --batch 8 --seq 2048 --repeats 3
    python benchmarks/cpu_attention.py --batch 1 --blocks 64 128 256 512   # block sweep

``--blocks`` times ``"xla_blocked"`` alone at each query block (``xla_blocked_<n>_s``)
instead of the implementations: how ``DEFAULT_BLOCK`` was chosen.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from tarka_jax.kernels import attention
from tarka_jax.kernels.xla_blocked import attention_xla_blocked


def time_min(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def allowed_pairs_count(t: int, window) -> int:
    if window is None:
        return t * t
    i = np.arange(t)
    lo, hi = np.maximum(i - window[0], 0), np.minimum(i + window[1], t - 1)
    return int((hi - lo + 1).sum())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[8])
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--windows", nargs="+", default=["256", "full"],
                   help="symmetric window half-widths, or 'full'")
    p.add_argument("--implementations", nargs="+", default=["xla", "xla_blocked"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--blocks", type=int, nargs="+", default=None,
                   help="sweep xla_blocked's query block instead of comparing implementations")
    args = p.parse_args(argv)
    heads, kv_heads, d = 3, 1, 256
    for b in args.batch:
        rng = np.random.default_rng(0)
        base = [rng.standard_normal(s).astype(np.float32)
                for s in [(b, args.seq, heads, d), (b, args.seq, kv_heads, d),
                          (b, args.seq, kv_heads, d)]]
        seg = jnp.ones((b, args.seq), jnp.int32)
        for dtype in args.dtypes:
            q, k, v = (jnp.asarray(x).astype(dtype) for x in base)
            for w in args.windows:
                window = None if w == "full" else (int(w), int(w))
                flops = 4 * heads * d * allowed_pairs_count(args.seq, window) * b
                row = {"batch": b, "seq": args.seq, "dtype": dtype, "window": w}
                candidates = {  # row key -> attention(q, k, v, window)
                    name: lambda q, k, v, window, name=name: attention(
                        q, k, v, seg, window=window, implementation=name)
                    for name in args.implementations}
                if args.blocks:
                    candidates = {
                        f"xla_blocked_{n}": lambda q, k, v, window, n=n: attention_xla_blocked(
                            q, k, v, seg, window=window, scale=d ** -0.5, block=n)
                        for n in args.blocks}
                for name, call in candidates.items():
                    fn = jax.jit(lambda q, k, v, call=call, window=window: call(q, k, v, window))
                    seconds = time_min(fn, (q, k, v), args.repeats)
                    row[f"{name}_s"] = round(seconds, 4)
                    row[f"{name}_gflops"] = round(flops / seconds / 1e9, 1)
                if "xla_s" in row and "xla_blocked_s" in row:
                    row["speedup"] = round(row["xla_s"] / row["xla_blocked_s"], 2)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""Is XLA:CPU's int8 dot faster than its float32 dot at the model's GEMM shapes? (issue 32)

The question an int8 compute path stands on: ``jax.lax.dot_general`` on int8 inputs with
``preferred_element_type=int32`` against the same product in float32, at the dense layers'
shapes of the Tarka / EmbeddingGemma encoder (hidden 768: fused-free Q/K/V/O projections,
the gated MLP 768 -> 2 x 1152 -> 768, the head 768 -> 3072 -> 768) for N token slots, and
the same in PyTorch (float32 ``F.linear`` and, for scale, ``torch._int_mm`` when present).
"int8 + quant" also times the dynamic quantisation of the activations (per row absmax,
round, clip) and the int32 -> float32 rescale, i.e. what an int8 layer really costs.

    python benchmarks/cpu_int8_dot.py [--slots 64 512 2048] [--repeats 5] [--json OUT]

GFLOP/s counts 2 * N * K * M operations for every variant; the median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

# (name, K, M): the encoder's dense products, x [N, K] @ w [K, M]
SHAPES = (("q_proj", 768, 768), ("kv_proj", 768, 256), ("o_proj", 768, 768),
          ("mlp_gate_up", 768, 2304), ("mlp_down", 1152, 768), ("head_up", 768, 3072),
          ("head_down", 3072, 768))


def _median_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slots", type=int, nargs="+", default=[64, 512, 2048])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    def f32(x, w):
        return x @ w

    def i8(x, w):
        return jax.lax.dot_general(x, w, (((1,), (0,)), ((), ())),
                                   preferred_element_type=jnp.int32)

    def i8_quant(x, w, w_scale):  # dynamic per-row activation quantisation + rescale
        scale = jnp.max(jnp.abs(x), axis=1, keepdims=True) / 127.0 + 1e-12
        xq = jnp.clip(jnp.round(x / scale), -127, 127).astype(jnp.int8)
        acc = jax.lax.dot_general(xq, w, (((1,), (0,)), ((), ())),
                                  preferred_element_type=jnp.int32)
        return acc.astype(jnp.float32) * scale * w_scale

    jf32, ji8, ji8q = jax.jit(f32), jax.jit(i8), jax.jit(i8_quant)
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'shape':12s}{'N':>6s}{'K':>6s}{'M':>6s}{'xla f32':>9s}{'xla i8':>9s}"
          f"{'i8+quant':>9s}{'i8/f32':>7s}{'torch f32':>10s}{'torch i8':>9s}  GFLOP/s")
    for n in args.slots:
        for name, k, m in SHAPES:
            x = rng.standard_normal((n, k), np.float32)
            w = rng.standard_normal((k, m), np.float32)
            xq = rng.integers(-127, 128, (n, k), dtype=np.int8)
            wq = rng.integers(-127, 128, (k, m), dtype=np.int8)
            jx, jw, jxq, jwq = map(jnp.asarray, (x, w, xq, wq))
            ws = jnp.ones((1, m), jnp.float32)
            flops = 2 * n * k * m
            row = {"shape": name, "n": n, "k": k, "m": m}
            row["xla_f32"] = flops / _median_s(lambda: jf32(jx, jw).block_until_ready(),
                                               args.repeats) / 1e9
            row["xla_i8"] = flops / _median_s(lambda: ji8(jxq, jwq).block_until_ready(),
                                              args.repeats) / 1e9
            row["xla_i8_quant"] = flops / _median_s(
                lambda: ji8q(jx, jwq, ws).block_until_ready(), args.repeats) / 1e9
            if torch is not None:
                tx, tw = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(w.T))
                row["torch_f32"] = flops / _median_s(
                    lambda: torch.nn.functional.linear(tx, tw), args.repeats) / 1e9
                if hasattr(torch, "_int_mm") and n > 16:
                    txq, twq = torch.from_numpy(xq), torch.from_numpy(wq)
                    try:
                        row["torch_i8"] = flops / _median_s(
                            lambda: torch._int_mm(txq, twq), args.repeats) / 1e9
                    except RuntimeError:
                        pass
            rows.append(row)
            print(f"{name:12s}{n:6d}{k:6d}{m:6d}{row['xla_f32']:9.1f}{row['xla_i8']:9.1f}"
                  f"{row['xla_i8_quant']:9.1f}{row['xla_i8'] / row['xla_f32']:7.2f}"
                  f"{row.get('torch_f32', float('nan')):10.1f}"
                  f"{row.get('torch_i8', float('nan')):9.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"jax": jax.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

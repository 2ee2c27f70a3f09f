"""Compile seconds per new shape and time per call of the full-size model: unrolled vs scanned.

For each shape ``ROWSxWIDTH`` and each variant, jit-lowers and compiles the
whole ``tarka_jax.nn.encoder.embed`` (encoder, pooling, Dense head) on abstract
full-size parameters (no weights are built), so only tracing and XLA compile
time are measured; wall seconds and the process CPU seconds of both steps are
reported (the machine may be shared). With ``--run SHAPE ...`` it also builds
random full-size weights and times steady-state calls of the compiled program
(the scanned variant stacks ~400 MB of layer weights on every call).

Variants: ``unrolled`` (``scan_layers=False``, the loop of 24 ``layers_{i}``),
``scanned`` (``scan_layers=True``: one scan body per layer type). ``--xla-option
NAME=VALUE`` passes XLA compiler options to ``compile`` (e.g.
``xla_backend_optimization_level=0``) to try cheaper compile levers.

    python benchmarks/compile_time.py [--shapes 32x2048 8x512 32x64] [--variants unrolled scanned]
        [--run 1x32 32x64] [--remat] [--dtype float32] [--attention xla] [--layers 24]
        [--xla-option NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

VARIANTS = {"unrolled": False, "scanned": True}


def full_size_config(layers: int = 24):
    """The Tarka-Embedding-150M-V1 shapes (5 sliding + 1 full per period, window 512)."""
    from tarka_jax.nn.config import FULL, SLIDING, DenseSpec, ModelConfig

    types = tuple(SLIDING if (i + 1) % 6 else FULL for i in range(layers))
    return ModelConfig(vocab_size=64_400, hidden_size=768, intermediate_size=1152,
                       num_layers=layers, num_heads=3, num_kv_heads=1, head_dim=256,
                       query_pre_attn_scalar=256, layer_types=types, sliding_window=512,
                       dense=(DenseSpec(768, 3072), DenseSpec(3072, 768)))


def _shape(text: str) -> tuple[int, int]:
    rows, width = text.lower().split("x")
    return int(rows), int(width)


def _option(text: str):
    name, value = text.split("=", 1)
    for cast in (int, float):
        try:
            return name, cast(value)
        except ValueError:
            pass
    return name, {"true": True, "false": False}.get(value.lower(), value)


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="*", type=_shape, default=[(32, 2048), (8, 512), (32, 64)])
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    p.add_argument("--run", nargs="*", type=_shape, default=[],
                   help="shapes whose steady-state call time is also measured (real weights)")
    p.add_argument("--calls", type=int, default=3, help="timed calls per --run shape")
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--attention", default=None, help="attention implementation (None: default)")
    p.add_argument("--remat", action="store_true", help="compile the gradient with remat")
    p.add_argument("--xla-option", nargs="*", type=_option, default=[])
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from tarka_jax.nn.encoder import embed, init_params

    cfg = full_size_config(args.layers)
    options = dict(args.xla_option) or None
    abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    params = None

    def program(scan: bool):
        def forward(p, b):
            return embed(p, b, cfg, dtype=args.dtype, attention=args.attention,
                         scan_layers=scan, remat=args.remat)
        if args.remat:  # the training shape of the program: gradient of a scalar loss
            return jax.jit(jax.grad(lambda p, b: jnp.sum(forward(p, b)[:, 0, :8])))
        return jax.jit(forward)

    for rows, width in dict.fromkeys(list(args.shapes) + list(args.run)):
        ids = jax.ShapeDtypeStruct((rows, width), jnp.int32)
        spec = {"input_ids": ids, "segment_ids": ids, "positions": ids}
        for name in args.variants:
            fn = program(VARIANTS[name])
            lowered, lower_s, lower_cpu = _timed(lambda: fn.lower(abstract, spec))
            compiled, compile_s, compile_cpu = _timed(
                lambda: lowered.compile(compiler_options=options))
            row = {"variant": name, "rows": rows, "width": width, "dtype": args.dtype,
                   "remat": args.remat, "attention": args.attention, "layers": args.layers,
                   "lower_s": lower_s, "compile_s": compile_s,
                   "total_s": round(lower_s + compile_s, 1),
                   "cpu_s": round(lower_cpu + compile_cpu, 1), "xla_options": options}
            if (rows, width) in args.run:
                if params is None:
                    params = jax.jit(lambda: init_params(cfg, jax.random.PRNGKey(0)))()
                batch = {"input_ids": jnp.ones((rows, width), jnp.int32),
                         "segment_ids": jnp.ones((rows, width), jnp.int32),
                         "positions": jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32),
                                                       (rows, width))}
                jax.block_until_ready(compiled(params, batch))  # warm-up
                calls = [_timed(lambda: jax.block_until_ready(compiled(params, batch)))[1:]
                         for _ in range(args.calls)]
                row["call_s_median"] = statistics.median(c[0] for c in calls)
                row["call_s_min"] = min(c[0] for c in calls)
                row["call_cpu_s_median"] = statistics.median(c[1] for c in calls)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""Compile seconds of the full-size model for one new shape: unrolled layers vs scanned.

Lowers and compiles ``embed`` (unrolled ``layers_{i}``) and
``tarka_jax.scan_layers.encoder_scanned`` on abstract full-size parameters
(no weights are built), so only tracing and XLA compile time are measured.

    python benchmarks/compile_time.py [--rows 8] [--width 512] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from tarka_jax.config import FULL, SLIDING, DenseSpec, ModelConfig
    from tarka_jax.model import embed, init_params
    from tarka_jax.scan_layers import encoder_scanned

    types = tuple(SLIDING if (i + 1) % 6 else FULL for i in range(args.layers))
    cfg = ModelConfig(vocab_size=64_400, hidden_size=768, intermediate_size=1152,
                      num_layers=args.layers, num_heads=3, num_kv_heads=1, head_dim=256,
                      query_pre_attn_scalar=256, layer_types=types, sliding_window=512,
                      dense=(DenseSpec(768, 3072), DenseSpec(3072, 768)))
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    ids = jax.ShapeDtypeStruct((args.rows, args.width), jnp.int32)
    batch = {"input_ids": ids, "segment_ids": ids, "positions": ids}

    def measure(fn):
        start = time.perf_counter()
        lowered = jax.jit(fn).lower(params, batch)
        lower_s = time.perf_counter() - start
        start = time.perf_counter()
        lowered.compile()
        return {"lower_s": round(lower_s, 1), "compile_s": round(time.perf_counter() - start, 1)}

    def scanned(p, b):
        return encoder_scanned(p["encoder"], b["input_ids"], b["segment_ids"], b["positions"],
                               cfg, dtype=args.dtype)

    for name, fn in (("unrolled", lambda p, b: embed(p, b, cfg, dtype=args.dtype)),
                     ("scanned", scanned)):
        print(json.dumps({"model": name, "rows": args.rows, "width": args.width, **measure(fn)}),
              flush=True)


if __name__ == "__main__":
    main()

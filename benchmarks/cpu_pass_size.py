"""CPU throughput of one packed forward pass against its size (rows x width token slots).

The planner (``tarka_jax.inference.batching``) charges work by token slots, as if a slot
cost the same in a pass of 2k slots and of 16k. This sweep measures that: per
width and row count it times one forward of the full-size random checkpoint
(``cpu_encode.full_size_reference``), rows packed with texts of
``--text-tokens`` tokens, and prints token slots per second.

    python benchmarks/cpu_pass_size.py [--widths 256 512 1024] [--rows 4 8 16 32]
        [--layers 24] [--dtype float32] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from cpu_encode import full_size_reference, timed


def packed_batch(rows: int, width: int, text_tokens: int):
    """int32 arrays [rows, width]: texts of ``text_tokens`` tokens back to back."""
    import numpy as np

    position = np.arange(width) % text_tokens
    segment = np.arange(width) // text_tokens + 1
    tile = lambda x: np.ascontiguousarray(np.broadcast_to(x.astype(np.int32), (rows, width)))
    ids = np.random.default_rng(0).integers(3, 64_000, (rows, width), dtype=np.int32)
    return {"input_ids": ids, "segment_ids": tile(segment), "positions": tile(position)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", nargs="+", type=int, default=[256, 512, 1024])
    p.add_argument("--rows", nargs="+", type=int, default=[4, 8, 16, 32])
    p.add_argument("--text-tokens", type=int, default=200)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-slots", type=int, default=32 * 1024, help="skip bigger passes")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax

    from tarka_jax.inference.batching import segments_for
    from tarka_jax.inference.embedder import Embedder
    from tarka_jax.inference.passes import _embed_jit

    folder = full_size_reference(f"/tmp/tarka_jax_bench_{args.layers}l", 2048, args.layers)
    ours = Embedder.from_pretrained(folder, dtype=args.dtype, max_seq_length=2048)
    results = {"date": time.strftime("%Y-%m-%d %H:%M"),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
               "python": sys.version.split()[0], "jax": jax.__version__,
               "layers": args.layers, "dtype": args.dtype, "attention": ours.attention,
               "text_tokens": args.text_tokens, "rows": []}
    print(f"{'width':>6s}{'rows':>6s}{'slots':>8s}{'compile s':>10s}{'pass s':>8s}"
          f"{'slots/s':>9s}")
    for width in args.widths:
        for rows in args.rows:
            if rows * width > args.max_slots:
                continue
            batch = jax.device_put(packed_batch(rows, width, min(args.text_tokens, width)))
            fwd = lambda: _embed_jit(ours.params, batch, ours.config, dtype=ours.dtype,
                                     attention=ours.attention,
                                     segments_per_row=segments_for(width)).block_until_ready()
            start = time.perf_counter()
            fwd()
            first_s = time.perf_counter() - start
            pass_s = timed(fwd, args.repeats)
            row = {"width": width, "rows": rows, "slots": rows * width,
                   "compile_s": max(first_s - pass_s, 0.0), "pass_s": pass_s,
                   "slots_per_s": rows * width / pass_s}
            results["rows"].append(row)
            print(f"{width:6d}{rows:6d}{rows * width:8d}{row['compile_s']:10.1f}"
                  f"{pass_s:8.2f}{row['slots_per_s']:9.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

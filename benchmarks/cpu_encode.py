"""CPU throughput: tarka-jax ``encode_document`` vs sentence-transformers, per length mix.

Both run in this one process on the same random Tarka-shaped checkpoint (full
size: 24 layers, hidden 768, vocab 64,400; ``--layers`` for a quick look) at
``max_seq_length`` 2048, on four length mixes (token counts):

  queries     5-30        passages   100-300
  long        800-2048    loguniform 5-2048 (log-uniform)

Per mix and dtype it prints tokens/s for both, the ratio, our first-call time,
the compile seconds per new shape, and at the end the peak RSS. ``--profile``
adds where the time goes for the mix's widest pass: attention (timed alone at
that shape, all layers) vs the rest, and the share of a measured fp32 matmul
peak the dense layers reach.

    python benchmarks/cpu_encode.py [--mixes queries long] [--texts-per-mix 32] [--layers 6]
        [--dtypes float32 bfloat16] [--batch-size 32] [--profile] [--json OUT]

XLA CPU flags must be set before jax starts: pass them in XLA_FLAGS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np

MIXES = {"queries": (5, 30, "uniform"), "passages": (100, 300, "uniform"),
         "long": (800, 2048, "uniform"), "loguniform": (5, 2048, "log")}


def full_size_reference(folder: str, max_seq_length: int, layers: int = 24):
    """Build (once) a random Tarka-shaped sentence-transformers folder with the torch stack."""
    from tarka_jax.nn.config import layer_types_pattern
    from tarka_jax.testing.reference import TinySpec, build_reference_model

    layer_types = layer_types_pattern(layers, 6)
    spec = TinySpec(vocab_size=64_400, hidden_size=768, intermediate_size=1152,
                    num_layers=layers, num_heads=3, num_kv_heads=1, head_dim=256,
                    query_pre_attn_scalar=256, sliding_window=512, layer_types=layer_types,
                    dense=(3072, 768), max_seq_length=max_seq_length)
    if not os.path.exists(os.path.join(folder, "modules.json")):
        build_reference_model(folder, spec)
    return folder


def mix_texts(name: str, n: int, tokens_per_word: float, seed: int = 0) -> list[str]:
    """``n`` texts whose token counts follow the mix (approximately: words are scaled)."""
    from tarka_jax.testing.reference import long_text

    lo, hi, kind = MIXES[name]
    rng = np.random.default_rng(seed)
    if kind == "log":
        tokens = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    else:
        tokens = rng.uniform(lo, hi, n)
    words = np.maximum(1, np.round(tokens / tokens_per_word)).astype(int)
    return [long_text(int(w), seed=i) for i, w in enumerate(words)]


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_gflops(dtype: str = "float32") -> dict:
    """GEMM throughput this process reaches in ``dtype`` (the practical peak): XLA and torch.

    One 2048 x 768 @ 768 x 3072 product (the MLP's shape at a 2048-wide row), best of 5.
    """
    import jax
    import jax.numpy as jnp
    import torch

    flops = 2 * 2048 * 768 * 3072
    a = jnp.ones((2048, 768), dtype)
    b = jnp.ones((768, 3072), dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    xla_s = timed(lambda: f(a, b).block_until_ready(), 5)
    # nn.Linear's call (what sentence-transformers runs): weight [out, in]. torch.matmul on
    # bfloat16 takes a far slower path on this CPU (1 GFLOP/s against linear's ~20).
    ta = torch.ones((2048, 768), dtype=getattr(torch, dtype))
    tw = torch.ones((3072, 768), dtype=getattr(torch, dtype))
    torch.nn.functional.linear(ta, tw)
    torch_s = timed(lambda: torch.nn.functional.linear(ta, tw), 5)
    return {"xla": flops / xla_s / 1e9, "torch": flops / torch_s / 1e9}


def profile(ours, shape, dtype: str) -> dict:
    """Time one forward at ``shape`` and the attention alone at that shape, every layer."""
    import jax
    import jax.numpy as jnp

    from tarka_jax.inference.batching import SlotCost
    from tarka_jax.inference.passes import _embed_jit
    from tarka_jax.kernels import attention

    rows, width, segments = shape
    cfg = ours.config
    seg = jnp.ones((rows, width), jnp.int32)
    batch = {"input_ids": jnp.ones((rows, width), jnp.int32), "segment_ids": seg,
             "positions": jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (rows, width))}
    fwd = lambda: _embed_jit(ours.params, batch, cfg, dtype=dtype,
                             attention=ours.attention, segments_per_row=segments)
    fwd().block_until_ready()
    forward_s = timed(lambda: fwd().block_until_ready(), 2)
    q = jnp.ones((rows, width, cfg.num_heads, cfg.head_dim), dtype)
    kv = jnp.ones((rows, width, cfg.num_kv_heads, cfg.head_dim), dtype)
    attn_s = 0.0
    windows = [cfg.window_for(i) for i in range(cfg.num_layers)]
    for window in set(windows):
        f = jax.jit(lambda q, kv, window=window: attention(q, kv, kv, seg, window=window,
                                                           implementation=ours.attention))
        f(q, kv).block_until_ready()
        attn_s += windows.count(window) * timed(lambda: f(q, kv).block_until_ready(), 2)
    per_token = SlotCost.of(cfg).dense  # FLOPs per token outside attention, every layer
    dense_gflops = per_token * rows * width / max(forward_s - attn_s, 1e-9) / 1e9
    return {"shape": list(shape), "forward_s": forward_s, "attention_s": attn_s,
            "attention_share": attn_s / forward_s, "dense_gflops": dense_gflops}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mixes", nargs="+", default=list(MIXES), choices=list(MIXES))
    p.add_argument("--texts-per-mix", type=int, default=64)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                   choices=("float32", "bfloat16"))
    p.add_argument("--layers", type=int, default=24, help="24 = full size")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--attention", default=None, help="implementation (None: the default)")
    p.add_argument("--unpacked", action="store_true", help="pack=False (one text per row)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--folder", default=None)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    import jax
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    from tarka_jax import __version__
    from tarka_jax.inference.embedder import Embedder
    from tarka_jax.testing.reference import long_text

    folder = full_size_reference(args.folder or f"/tmp/tarka_jax_bench_{args.layers}l",
                                 args.max_seq_length, args.layers)
    probe = Embedder.from_pretrained(folder, max_seq_length=args.max_seq_length)
    tokens_per_word = len(probe.tokenizer.encode([long_text(1000)])[0]) / 1000
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine":
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "python": sys.version.split()[0], "jax": jax.__version__, "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__, "tarka_jax": __version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "layers": args.layers,
        "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
        "texts_per_mix": args.texts_per_mix, "pack": not args.unpacked, "rows": [],
    }
    if args.profile:  # {dtype: {"xla": GFLOP/s, "torch": GFLOP/s}}
        results["matmul_peak_gflops"] = {d: matmul_peak_gflops(d) for d in args.dtypes}
    print(f"{'mix':11s}{'dtype':10s}{'tokens':>8s}{'ST tok/s':>10s}{'ours tok/s':>11s}"
          f"{'ratio':>7s}{'first s':>9s}{'s/shape':>9s}{'shapes':>7s}{'max|diff|':>10s}")
    for dtype in args.dtypes:
        st = SentenceTransformer(folder, device="cpu").to(
            torch.float32 if dtype == "float32" else torch.bfloat16)
        st.max_seq_length = args.max_seq_length
        ours = Embedder.from_pretrained(folder, dtype=dtype, attention=args.attention,
                                        max_seq_length=args.max_seq_length)
        for mix in args.mixes:
            texts = mix_texts(mix, args.texts_per_mix, tokens_per_word)
            prompt = ours.prompts.get("document")
            n_tokens = int(sum(len(x) for x in ours.tokenizer.encode(texts, prompt=prompt)))
            encode = lambda: ours.encode_document(
                texts, batch_size=args.batch_size, pack=not args.unpacked)
            shapes_before = set(ours.compiled_shapes)
            start = time.perf_counter()
            first = encode()
            first_s = time.perf_counter() - start
            new_shapes = len(ours.compiled_shapes - shapes_before)
            ours_s = timed(encode, args.repeats)
            st_outputs = []  # the timed calls' embeddings: the reference, no extra call
            with torch.inference_mode():
                st.encode_document(texts[:2], batch_size=args.batch_size)  # warm-up
                st_s = timed(lambda: st_outputs.append(
                    st.encode_document(texts, batch_size=args.batch_size)), args.repeats)
            ref = st_outputs[-1]
            row = {"mix": mix, "dtype": dtype, "texts": len(texts), "tokens": n_tokens,
                   "st_tokens_per_s": n_tokens / st_s, "ours_tokens_per_s": n_tokens / ours_s,
                   "ratio": st_s / ours_s, "first_call_s": first_s, "new_shapes": new_shapes,
                   "compile_s_per_shape": max(first_s - ours_s, 0.0) / max(new_shapes, 1),
                   "max_abs_diff_vs_st": float(np.abs(first - np.asarray(ref, np.float32)).max())}
            if args.profile:
                widest = max(ours.compiled_shapes - shapes_before or ours.compiled_shapes,
                             key=lambda s: s[0] * s[1])
                row["profile"] = profile(ours, widest, dtype)
            results["rows"].append(row)
            print(f"{mix:11s}{dtype:10s}{n_tokens:8d}{row['st_tokens_per_s']:10.0f}"
                  f"{row['ours_tokens_per_s']:11.0f}{row['ratio']:7.2f}{first_s:9.1f}"
                  f"{row['compile_s_per_shape']:9.1f}{new_shapes:7d}"
                  f"{row['max_abs_diff_vs_st']:10.1e}", flush=True)
            if args.profile:
                prof, peak = row["profile"], results["matmul_peak_gflops"][dtype]
                print(f"  profile {prof['shape']}: forward {prof['forward_s']:.2f} s, attention "
                      f"{prof['attention_share']:.0%}, dense layers {prof['dense_gflops']:.0f} "
                      f"GFLOP/s; a lone {dtype} GEMM: XLA {peak['xla']:.0f}, torch "
                      f"{peak['torch']:.0f} GFLOP/s", flush=True)
    results["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {results['peak_rss_gib']:.2f} GiB (this process: both libraries)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

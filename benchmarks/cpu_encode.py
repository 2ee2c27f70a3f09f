"""CPU throughput: tarka-jax ``encode_document`` vs sentence-transformers, side by side.

Both run in this one process on the same full-size random Tarka-shaped
checkpoint (24 layers, hidden 768, vocab 64,400) and the same mixed-length
texts. Prints tokens/s for both, the ratio, and our compile time separately.

    python benchmarks/cpu_encode.py [--texts 96] [--batch-size 32] [--dtype float32] [--json OUT]

XLA CPU flags must be set before jax starts: pass them in XLA_FLAGS, e.g.
``XLA_FLAGS=--xla_cpu_use_onednn=true python benchmarks/cpu_encode.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def full_size_reference(folder: str, max_seq_length: int):
    """Build (once) a random Tarka-shaped sentence-transformers folder with the torch stack."""
    from tarka_jax.config import layer_types_pattern
    from tarka_jax.testing import TinySpec, build_reference_model

    layer_types = layer_types_pattern(24, 6)
    spec = TinySpec(vocab_size=64_400, hidden_size=768, intermediate_size=1152, num_layers=24,
                    num_heads=3, num_kv_heads=1, head_dim=256, query_pre_attn_scalar=256,
                    sliding_window=512, layer_types=layer_types, dense=(3072, 768),
                    max_seq_length=max_seq_length)
    if not os.path.exists(os.path.join(folder, "modules.json")):
        build_reference_model(folder, spec)
    return folder


def mixed_texts(n: int, seed: int = 0, max_words: int = 400) -> list[str]:
    """Log-uniform lengths from 4 to max_words words: short queries to long passages."""
    from tarka_jax.testing import long_text

    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(4), np.log(max_words), n)).astype(int)
    return [long_text(int(k), seed=i) for i, k in enumerate(lengths)]


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--folder", default="/tmp/tarka_jax_bench_full")
    p.add_argument("--pack", action="store_true",
                   help="also time packed inference (the Embedder default)")
    p.add_argument("--fine-buckets", action="store_true",
                   help="also time buckets_per_octave=2 (finer length buckets)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    import jax
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    from tarka_jax import __version__
    from tarka_jax.embedder import Embedder

    folder = full_size_reference(args.folder, args.max_seq_length)
    texts = mixed_texts(args.texts)
    st = SentenceTransformer(folder, device="cpu")
    torch_dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
    st = st.to(torch_dtype)
    ours = Embedder.from_pretrained(folder, dtype=args.dtype)
    n_tokens = int(sum(len(x) for x in ours.tokenizer.encode(texts, prompt=ours.prompts.get("document"))))

    start = time.perf_counter()
    # pack=False: one text per row, sorted and bucketed (what sentence-transformers does).
    first = ours.encode_document(texts, batch_size=args.batch_size, pack=False)
    compile_and_first = time.perf_counter() - start
    ours_s = timed(lambda: ours.encode_document(texts, batch_size=args.batch_size, pack=False),
                   args.repeats)
    with torch.inference_mode():
        st.encode_document(texts[:4], batch_size=args.batch_size)  # warm-up
        st_s = timed(lambda: st.encode_document(texts, batch_size=args.batch_size), args.repeats)
        ref = st.encode_document(texts, batch_size=args.batch_size)
    results = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus", "python": sys.version.split()[0], "jax": jax.__version__,
        "torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
        "tarka_jax": __version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "dtype": args.dtype, "texts": len(texts), "tokens": n_tokens, "batch_size": args.batch_size,
        "compile_plus_first_s": compile_and_first, "compiled_shapes": len(ours.compiled_shapes),
        "tarka_jax_tokens_per_s": n_tokens / ours_s, "st_tokens_per_s": n_tokens / st_s,
        "max_abs_diff_vs_st": float(np.abs(first - ref).max()),
    }
    results["ratio"] = results["tarka_jax_tokens_per_s"] / results["st_tokens_per_s"]
    if args.fine_buckets:
        fine = Embedder(ours.config, ours.params, ours.tokenizer, prompts=ours.prompts,
                        dtype=args.dtype, buckets_per_octave=2, pack=False)
        start = time.perf_counter()
        fine.encode_document(texts, batch_size=args.batch_size)
        results["fine_compile_plus_first_s"] = time.perf_counter() - start
        fine_s = timed(lambda: fine.encode_document(texts, batch_size=args.batch_size),
                       args.repeats)
        results["tarka_jax_fine_tokens_per_s"] = n_tokens / fine_s
        results["fine_ratio"] = results["tarka_jax_fine_tokens_per_s"] / results["st_tokens_per_s"]
    if args.pack:
        ours.encode_document(texts, batch_size=args.batch_size, pack=True)
        packed_s = timed(lambda: ours.encode_document(texts, batch_size=args.batch_size,
                                                      pack=True), args.repeats)
        results["tarka_jax_packed_tokens_per_s"] = n_tokens / packed_s
        results["packed_ratio"] = results["tarka_jax_packed_tokens_per_s"] / results["st_tokens_per_s"]

    print(f"{'':28s}{'tokens/s':>12s}")
    print(f"{'sentence-transformers':28s}{results['st_tokens_per_s']:12.0f}")
    print(f"{'tarka-jax unpacked':28s}{results['tarka_jax_tokens_per_s']:12.0f}"
          f"   ratio {results['ratio']:.2f}x")
    if args.fine_buckets:
        print(f"{'tarka-jax 2 buckets/octave':28s}{results['tarka_jax_fine_tokens_per_s']:12.0f}"
              f"   ratio {results['fine_ratio']:.2f}x")
    if args.pack:
        print(f"{'tarka-jax packed':28s}{results['tarka_jax_packed_tokens_per_s']:12.0f}"
              f"   ratio {results['packed_ratio']:.2f}x")
    print(f"compile + first call {compile_and_first:.1f} s over {results['compiled_shapes']} shapes;"
          f" {n_tokens} tokens in {len(texts)} texts; max |diff| vs ST {results['max_abs_diff_vs_st']:.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

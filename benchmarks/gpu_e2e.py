"""End to end on a GPU: ``Embedder.encode_document`` (bf16, best attention) vs
sentence-transformers (torch bf16, sdpa) on the same full-size random Tarka checkpoint
and the same mixed-length texts, side by side in one process.

    python benchmarks/gpu_e2e.py RESULTS_DIR [--dry-run]

Writes RESULTS_DIR/e2e.json and prints one line per system. ``--dry-run`` runs a
tiny random checkpoint on the CPU (float32, few texts) so CI exercises this path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_encode import full_size_reference, mix_texts, timed  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results_dir")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)

    import jax

    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as e:  # the torch-free CI leg: nothing to compare against
        print(f"e2e skipped: the sentence-transformers baseline needs torch ({e})")
        with open(os.path.join(args.results_dir, "e2e.json"), "w") as f:
            json.dump({"skipped": str(e)}, f)
        return

    from tarka_jax.inference.embedder import Embedder
    from tarka_jax.testing.reference import TinySpec, build_reference_model

    if args.dry_run:
        folder = os.path.join(args.results_dir, "e2e_tiny_model")
        if not os.path.exists(os.path.join(folder, "modules.json")):
            build_reference_model(folder, TinySpec(max_seq_length=64))
        texts, dtype, device = mix_texts("queries", 12, 1.0), "float32", "cpu"
    else:
        folder = full_size_reference("/tmp/tarka_jax_bench_full_2048", 2048)
        # The log-uniform 5..2048-token mix of benchmarks/cpu_encode.py (the real context).
        texts, dtype, device = mix_texts("loguniform", args.texts, 1.3), "bfloat16", "cuda"
    torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
    st = SentenceTransformer(folder, device=device,
                             model_kwargs={"attn_implementation": "sdpa"}).to(torch_dtype)
    ours = Embedder.from_pretrained(folder, dtype=dtype)
    n_tokens = int(sum(len(x) for x in ours.tokenizer.encode(texts, prompt=ours.prompts.get("document"))))

    results = {"device": str(jax.devices()[0].device_kind), "dtype": dtype, "texts": len(texts),
               "tokens": n_tokens, "jax": jax.__version__, "torch": torch.__version__}
    variants = {}
    for attention in ("xla", "pallas_triton"):
        model = Embedder(ours.config, ours.params, ours.tokenizer, prompts=ours.prompts,
                         dtype=dtype, attention=attention)
        for pack in (False, True):
            name = f"tarka_jax_{attention}" + ("_packed" if pack else "")
            run = lambda: model.encode_document(texts, batch_size=args.batch_size, pack=pack)  # noqa: E731,B023
            try:
                start = time.perf_counter()
                first = run()
                results[f"{name}_compile_plus_first_s"] = time.perf_counter() - start
                results[f"{name}_tokens_per_s"] = n_tokens / timed(run, 2)
                variants[name] = first
            except Exception as e:  # a kernel that fails on this GPU is a result, not a crash
                results[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    with torch.inference_mode():
        ref = st.encode_document(texts, batch_size=args.batch_size)

        def run_st():
            st.encode_document(texts, batch_size=args.batch_size)
            if device == "cuda":
                torch.cuda.synchronize()

        results["st_tokens_per_s"] = n_tokens / timed(run_st, 2)
    print(f"e2e {results['device']} {dtype}: {n_tokens} tokens in {len(texts)} texts")
    print(f"  {'sentence-transformers':28s}{results['st_tokens_per_s']:10.0f} tok/s")
    for name, emb in variants.items():
        cosine = np.sum(emb * ref, -1) / np.linalg.norm(emb, axis=-1) / np.linalg.norm(ref, axis=-1)
        results[f"{name}_min_cosine_vs_st"] = float(cosine.min())
        results[f"{name}_ratio"] = results[f"{name}_tokens_per_s"] / results["st_tokens_per_s"]
        print(f"  {name:28s}{results[f'{name}_tokens_per_s']:10.0f} tok/s "
              f"({results[f'{name}_ratio']:.2f}x), min cosine vs ST {cosine.min():.5f}")
    for key, value in results.items():
        if key.endswith("_error"):
            print(f"  {key}: {value}")
    with open(os.path.join(args.results_dir, "e2e.json"), "w") as f:
        json.dump(results, f, indent=2)

if __name__ == "__main__":
    main()

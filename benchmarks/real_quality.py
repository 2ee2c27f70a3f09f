"""bfloat16 and quantised embeddings of a real model: agreement with float32 and retrieval quality.

On two retrieval sets built offline (``real_sets.py``: the committed held-out docstring pairs,
and the harder docstring-summary -> code set from held-out stdlib modules), four encoders
embed every query and document at one ``--max-seq-length``: tarka-jax float32 and bfloat16,
sentence-transformers float32 and bfloat16 (the folder's torch model cast with
``.to(torch.bfloat16)``). Reported:

* bf16 vs fp32 cosine of each text's embedding, per implementation (goal for ours: mean
  >= 0.999, min >= 0.99), and ours vs sentence-transformers in float32 (parity);
* nDCG@10 and MRR@10 of each encoder's embeddings as float32, int8 and binary (both with
  ``tarka_jax.quantize_embeddings``, sentence-transformers' rules; int8 ranges calibrated on
  the set's documents, scored by integer dot product; binary scored by Hamming distance,
  ties counted against the model as ``tarka_jax.evaluation.scores`` does).

    python benchmarks/real_quality.py --model DIR [--max-seq-length 256] [--code-pairs 300]
        [--encoders ours-fp32,ours-bf16,st-fp32,st-bf16] [--cache DIR] [--json OUT]

``--cache`` keeps each encoder's embeddings (``.npy``; derived from the weights: keep them
out of any repository) so a rerun only computes what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import real_sets  # noqa: E402

ENCODERS = ("ours-fp32", "ours-bf16", "st-fp32", "st-bf16")


def _encoder(name: str, model: str, max_seq_length: int):
    """An object with encode_query / encode_document (lists -> float32 [n, dim])."""
    impl, dtype = name.split("-")
    if impl == "ours":
        from tarka_jax import Embedder

        return Embedder.from_pretrained(model, dtype={"fp32": "float32", "bf16": "bfloat16"}[dtype],
                                        max_seq_length=max_seq_length)
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    st = SentenceTransformer(model, device="cpu")
    st.max_seq_length = max_seq_length
    return st.to(torch.bfloat16) if dtype == "bf16" else st


def embed_sets(name: str, make_encoder, sets: dict, max_seq_length: int, cache: str | None):
    """{set: (queries [Q, d], documents [N, d])} float32 and the seconds it took (None: read
    from ``cache``, where ``name``'s embeddings of these sets are kept)."""
    path = cache and os.path.join(cache, f"{name}-L{max_seq_length}.npz")
    if path and os.path.exists(path):
        saved = np.load(path)
        if all(f"{s}_q" in saved and len(saved[f"{s}_q"]) == len(p) for s, p in sets.items()):
            return {s: (saved[f"{s}_q"], saved[f"{s}_d"]) for s in sets}, None
    encoder = make_encoder()
    start, out = time.perf_counter(), {}
    for set_name, pairs in sets.items():
        q = encoder.encode_query([p["query"] for p in pairs], batch_size=16)
        d = encoder.encode_document([p["document"] for p in pairs], batch_size=16)
        out[set_name] = (np.asarray(q, np.float32), np.asarray(d, np.float32))
    seconds = time.perf_counter() - start
    if path:
        os.makedirs(cache, exist_ok=True)
        np.savez(path, **{f"{s}_{k}": v for s, (q, d) in out.items() for k, v in (("q", q),
                                                                                  ("d", d))})
    return out, seconds


def scores(queries: np.ndarray, documents: np.ndarray, precision: str) -> np.ndarray:
    """``[Q, N]`` similarities of float32, int8 or binary embeddings."""
    from tarka_jax import quantize_embeddings

    if precision == "float32":
        return queries @ documents.T  # unit vectors: cosine
    if precision == "int8":
        ranges = np.vstack([documents.min(0), documents.max(0)])
        qi, di = (quantize_embeddings(x, "int8", ranges=ranges).astype(np.int32)
                  for x in (queries, documents))
        return (qi @ di.T).astype(np.float64)
    qb, db = (np.unpackbits(quantize_embeddings(x, "ubinary"), axis=1)
              for x in (queries, documents))
    hamming = qb.astype(np.int32) @ (1 - db.T) + (1 - qb.astype(np.int32)) @ db.T
    return -hamming.astype(np.float64)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return np.sum(a * (b / np.linalg.norm(b, axis=1, keepdims=True)), axis=1)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--code-pairs", type=int, default=300)
    p.add_argument("--encoders", default=",".join(ENCODERS))
    p.add_argument("--cache", default=None, help="keep embeddings here (outside any repo)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from tarka_jax.evaluation.scores import retrieval_scores

    sets = {"docstrings": real_sets.docstring_pairs(),
            "code": real_sets.code_pairs(args.code_pairs)}
    names = [n for n in args.encoders.split(",") if n]
    emb, seconds = {}, {}
    for name in names:  # one model in memory at a time
        emb[name], seconds[name] = embed_sets(
            name, lambda: _encoder(name, os.path.expanduser(args.model), args.max_seq_length),
            sets, args.max_seq_length, args.cache)
        print(f"{name}: embedded in {seconds[name] or 0:.0f} s", flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "max_seq_length": args.max_seq_length,
              "sets": {s: len(v) for s, v in sets.items()}, "seconds": seconds,
              "agreement": {}, "retrieval": {}}

    def flat(name):
        return np.concatenate([x for s in sets for x in emb[name][s]])

    for a, b in (("ours-bf16", "ours-fp32"), ("st-bf16", "st-fp32"), ("ours-fp32", "st-fp32"),
                 ("ours-bf16", "st-bf16")):
        if a in emb and b in emb:
            cos = _cosines(flat(a), flat(b))
            result["agreement"][f"{a} vs {b}"] = {
                "mean_cos": float(cos.mean()), "min_cos": float(cos.min()),
                "max_abs_diff": float(np.abs(flat(a) - flat(b)).max())}
    print(f"{'pair':26s}{'mean cos':>10s}{'min cos':>10s}{'max |diff|':>12s}")
    for pair, row in result["agreement"].items():
        print(f"{pair:26s}{row['mean_cos']:10.6f}{row['min_cos']:10.6f}{row['max_abs_diff']:12.2e}")
    print(f"\n{'encoder':12s}{'precision':>10s}" + "".join(
        f"{s + ' nDCG@10':>18s}{'MRR@10':>8s}" for s in sets))
    for name in names:
        for precision in ("float32", "int8", "binary"):
            row = {}
            for s in sets:
                q, d = emb[name][s]
                m = retrieval_scores(q, d, scores=scores(q, d, precision))
                row[s] = {"ndcg@10": m["ndcg@10"], "mrr@10": m["mrr@10"]}
            result["retrieval"][f"{name} {precision}"] = row
            print(f"{name:12s}{precision:>10s}" + "".join(
                f"{row[s]['ndcg@10']:18.4f}{row[s]['mrr@10']:8.4f}" for s in sets))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

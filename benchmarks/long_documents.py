"""Long documents: retrieval with truncated vs chunked embeddings, and what chunking costs.

    python benchmarks/long_documents.py --model builtin:demo-mini
    python benchmarks/long_documents.py --model DIR --max-seq-length 512 --docs 24 --repeats 1

The corpus is built offline from this machine's Python standard library: every ``.py``
file (tests, idlelib, lib2to3, ensurepip, turtledemo and site-packages left out) whose
token count is between ``--min-windows`` and ``--max-windows`` times max_seq_length is a
candidate document. A query is the first line of a function or class docstring that starts
at least ``--deep`` windows into its file (so truncation at max_seq_length never sees it),
has at least 6 words, and occurs in no other document; one such line per document, picked
with a seeded generator, and ``--docs`` documents picked the same way. Every document is a
candidate for every query; the query's own file is the one relevant document.

Document embeddings, all through ``Embedder.encode_document``:

* ``truncate``: the default, cut at max_seq_length;
* ``mean``: ``chunking="mean"``, one vector per document;
* ``chunks-max``: ``chunking="chunks"``, a document scores its best window.

Queries go through ``encode_query``. Scores: nDCG@10, MRR, recall@1/5
(``tarka_jax.evaluation.scores``). Time: each mode's first call (compiles included), then
``--repeats`` timed calls, the modes interleaved in each round; docs/s and model tokens/s
(tokens the model ran on, prompt and special tokens of every window included) of the best
call. The machine may be shared: compare the modes' ratio, not absolute speed across runs.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import json
import os
import sys
import sysconfig
import time

import numpy as np

SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "ensurepip", "turtledemo", "site-packages",
             "__pycache__"}
MODES = ("truncate", "mean", "chunks-max")


def stdlib_files(root: str) -> list[str]:
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        out += [os.path.join(folder, f) for f in sorted(files) if f.endswith(".py")]
    return out


def docstring_lines(source: str) -> list[tuple[int, str]]:
    """(character offset, first line) of every function / class docstring of ``source``."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    line_starts = np.cumsum([0] + [len(line) for line in source.splitlines(keepends=True)])
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        doc = ast.get_docstring(node)
        first = node.body[0] if node.body else None
        if not doc or not isinstance(first, ast.Expr):
            continue
        line = " ".join(doc.strip().splitlines()[0].split())
        if len(line.split()) >= 6:
            out.append((int(line_starts[first.lineno - 1] + first.col_offset), line))
    return out


def build_corpus(model, *, docs: int, min_windows: float, max_windows: float, deep: float,
                 seed: int = 0) -> tuple[list[str], list[str], list[str], list[float]]:
    """(documents, queries, file names, query depth in windows); query i <-> document i."""
    from tokenizers import Tokenizer

    whole = Tokenizer.from_str(model.tokenizer.backend.to_str())
    whole.no_truncation()
    window = model.max_seq_length
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for path in stdlib_files(root):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if not min_windows * window <= len(text) <= 400 * window:  # (chars; tokens below)
            continue
        enc = whole.encode(text, add_special_tokens=False)
        if not min_windows * window <= len(enc.ids) <= max_windows * window:
            continue
        starts = [a for a, _ in enc.offsets]
        deep_lines = [(bisect.bisect_right(starts, at) / window, line)
                      for at, line in docstring_lines(text)]
        deep_lines = [(d, line) for d, line in deep_lines if d >= deep]
        if deep_lines:
            found.append((os.path.relpath(path, root), text, deep_lines))
    rng = np.random.default_rng(seed)
    picked, queries, depths = [], [], []
    for k in rng.permutation(len(found)):
        name, text, lines = found[k]
        others = [found[j][1] for j in range(len(found)) if j != k]
        lines = [(d, line) for d, line in lines if not any(line in o for o in others)
                 and line not in queries]
        if not lines:
            continue
        depth, line = lines[rng.integers(len(lines))]
        picked.append(k)
        queries.append(line)
        depths.append(depth)
        if len(picked) == docs:
            break
    return ([found[k][1] for k in picked], queries, [found[k][0] for k in picked], depths)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--model", default="builtin:demo-mini")
    p.add_argument("--max-seq-length", type=int, default=None, help="default: the model's")
    p.add_argument("--docs", type=int, default=40)
    p.add_argument("--min-windows", type=float, default=3.0)
    p.add_argument("--max-windows", type=float, default=12.0)
    p.add_argument("--deep", type=float, default=1.5,
                   help="a query's docstring starts at least this many windows in")
    p.add_argument("--overlap", type=int, default=0, help="chunk_overlap, tokens")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from tarka_jax import Embedder
    from tarka_jax.evaluation.scores import retrieval_scores
    from tarka_jax.inference.chunked import EncodeReport

    model = Embedder.from_pretrained(args.model, max_seq_length=args.max_seq_length)
    docs, queries, names, depths = build_corpus(
        model, docs=args.docs, min_windows=args.min_windows, max_windows=args.max_windows,
        deep=args.deep)
    if len(docs) < 2:
        print("fewer than two documents qualify: lower --min-windows or --deep", file=sys.stderr)
        return 2
    print(f"{len(docs)} documents from {sysconfig.get_paths()['stdlib']} "
          f"(max_seq_length {model.max_seq_length}); query depth in windows: median "
          f"{np.median(depths):.1f}, min {min(depths):.1f}", file=sys.stderr)
    q = model.encode_query(queries, batch_size=args.batch_size)
    modes = [m for m in args.modes.split(",") if m]
    kwargs = {"truncate": {}, "mean": {"chunking": "mean"}, "chunks-max": {"chunking": "chunks"}}
    results = {m: {"seconds": []} for m in modes}
    for round_ in range(args.repeats + 1):  # round 0: first calls (compiles)
        for m in modes[round_ % len(modes):] + modes[:round_ % len(modes)]:
            report = EncodeReport()
            start = time.perf_counter()
            out = model.encode_document(docs, batch_size=args.batch_size, report=report,
                                        chunk_overlap=args.overlap, **kwargs[m])
            seconds = time.perf_counter() - start
            print(f"round {round_} {m}: {seconds:.1f} s ({report.inputs} inputs)",
                  file=sys.stderr, flush=True)
            r = results[m]
            r["first" if round_ == 0 else "seconds"] = (
                seconds if round_ == 0 else r["seconds"] + [seconds])
            r["inputs"], r["tokens"], r["truncated"] = report.inputs, report.tokens, \
                len(report.truncated)
            r["out"] = out
    table = []
    for m in modes:
        r = results[m]
        out = r.pop("out")
        if m == "chunks-max":
            sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
                out.embeddings / np.linalg.norm(out.embeddings, axis=1, keepdims=True)).T
            scores = np.full((len(queries), len(docs)), -np.inf)
            for d in range(len(docs)):
                scores[:, d] = sims[:, out.of_text(d)].max(axis=1)
            metrics = retrieval_scores(None, None, scores=scores, recall_at=(1, 5))
        else:
            metrics = retrieval_scores(q, out, recall_at=(1, 5))
        best = min(r["seconds"]) if r["seconds"] else r["first"]
        r.update(metrics, best_seconds=best, docs_per_s=len(docs) / best,
                 model_tokens_per_s=r["tokens"] / best)
        table.append((m, r))
    base = dict(table).get("truncate", {}).get("best_seconds")
    print(f"{'mode':<11} {'nDCG@10':>7} {'MRR':>6} {'R@1':>5} {'R@5':>5} {'inputs':>6} "
          f"{'tokens':>8} {'first s':>7} {'best s':>7} {'docs/s':>7} {'tok/s':>7} {'time':>6}")
    for m, r in table:
        ratio = f"{r['best_seconds'] / base:5.2f}x" if base else "     -"
        print(f"{m:<11} {r['ndcg@10']:7.3f} {r['mrr']:6.3f} {r['recall@1']:5.2f} "
              f"{r['recall@5']:5.2f} {r['inputs']:6d} {r['tokens']:8d} {r['first']:7.1f} "
              f"{r['best_seconds']:7.1f} {r['docs_per_s']:7.2f} {r['model_tokens_per_s']:7.0f} "
              f"{ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "max_seq_length": model.max_seq_length,
                       "docs": names, "queries": queries, "depths": depths,
                       "overlap": args.overlap, "results": dict(table)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

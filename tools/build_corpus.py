"""Build the offline demo corpus: docstrings of Python's standard library.

    python tools/build_corpus.py [--out examples/data/stdlib] [--seed 0] [--heldout 0.2]

Run once; the output is committed (docstrings differ between Python versions, so
the corpus is pinned, not rebuilt in CI). It writes, under ``--out``:

* ``pairs.jsonl.gz``: one record per docstring that has a PEP 257 summary
  (line or short paragraph), a blank line and a body: ``{"id", "source", "summary", "body", "split"}``
  (whitespace collapsed to single spaces). ``split`` is ``"train"`` or
  ``"heldout"``, drawn with ``--seed``. Summaries and bodies are distinct, so
  every held-out summary has exactly one correct body.
* ``sentences.txt.gz``: the distinct sentences (4 to 80 words) of every
  docstring that is *not* behind a held-out pair, one per line: the training text.
* ``demo_docs.txt``: 50 held-out bodies (drawn with ``--seed``), one per line: a small
  document set for ``tarka-jax search -m builtin:demo-mini --docs ...``.
* ``MANIFEST.json``: Python version, seed, counts and the sha256 of the corpus files.

Read them with :func:`tarka_jax.testing.demo.load_corpus`.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import os
import random
import re
import sys
import sysconfig

# Folders of the stdlib whose docstrings are not library documentation.
_SKIP_DIRS = {"test", "tests", "idlelib", "turtledemo", "site-packages", "__pycache__",
              "lib2to3", "pydoc_data", "ensurepip", "venv"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`'\"(])")


def stdlib_files(lib: str) -> list[str]:
    files = []
    for root, dirs, names in os.walk(lib):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith(
            ("lib-dynload", "config-")))
        files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    return sorted(files)


def docstrings(path: str, lib: str):
    """(source, docstring) of the module, classes and functions of one file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    module = os.path.relpath(path, lib)[:-3].replace(os.sep, ".")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                name = getattr(node, "name", "")
                yield (f"{module}.{name}" if name else module), doc


def one_line(text: str) -> str:
    return " ".join(text.split())


def split_pair(doc: str) -> tuple[str, str] | None:
    """(summary, body) when the docstring is "summary paragraph, blank line, body".

    PEP 257 asks for a one-line summary; many stdlib docstrings wrap it over two
    or three lines, which is still one summary (at most 40 words).
    """
    head, sep, rest = doc.strip().partition("\n\n")
    if not sep or len(head.splitlines()) > 3:
        return None
    summary, body = one_line(head), one_line(rest)
    if not 3 <= len(summary.split()) <= 40 or len(body.split()) < 8:
        return None
    return summary, body


def sentences(doc: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(one_line(doc)) if 4 <= len(s.split()) <= 80]


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build(out: str, seed: int, heldout: float) -> dict:
    lib = sysconfig.get_paths()["stdlib"]
    seen: set[str] = set()
    docs: list[tuple[str, str]] = []
    for path in stdlib_files(lib):
        try:
            for source, doc in docstrings(path, lib):
                if doc not in seen:
                    seen.add(doc)
                    docs.append((source, doc))
        except (SyntaxError, UnicodeDecodeError):
            continue

    # Pairs with a unique summary and a unique body (else a query has two answers).
    candidates = [(source, doc, split_pair(doc)) for source, doc in docs]
    candidates = [c for c in candidates if c[2] is not None]
    summary_count: dict[str, int] = {}
    body_count: dict[str, int] = {}
    for _, _, (s, b) in candidates:
        summary_count[s] = summary_count.get(s, 0) + 1
        body_count[b] = body_count.get(b, 0) + 1
    pairs = [(source, doc, s, b) for source, doc, (s, b) in candidates
             if summary_count[s] == 1 and body_count[b] == 1]

    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    held = set(order[:round(heldout * len(pairs))])
    records = [{"id": i, "source": source, "summary": s, "body": b,
                "split": "heldout" if i in held else "train"}
               for i, (source, _, s, b) in enumerate(pairs)]

    # Training sentences: none may come from a held-out docstring.
    held_docs = {pairs[i][1] for i in held}
    banned = {s for doc in held_docs for s in sentences(doc)}
    train_sentences = sorted({s for _, doc in docs if doc not in held_docs
                              for s in sentences(doc)} - banned)

    os.makedirs(out, exist_ok=True)
    pairs_path = os.path.join(out, "pairs.jsonl.gz")
    sent_path = os.path.join(out, "sentences.txt.gz")
    # mtime=0: the same corpus gives byte-identical files.
    with gzip.GzipFile(pairs_path, "wb", mtime=0) as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())
    with gzip.GzipFile(sent_path, "wb", mtime=0) as f:
        f.write("".join(s + "\n" for s in train_sentences).encode())
    held_sorted = sorted(held)
    demo_docs = [records[i]["body"] for i in sorted(rng.sample(held_sorted, 50))]
    with open(os.path.join(out, "demo_docs.txt"), "w", encoding="utf-8") as f:
        f.writelines(d + "\n" for d in demo_docs)
    manifest = {
        "source": "docstrings of the Python standard library (ast.get_docstring of modules, "
                  "classes, functions); tests, idlelib, turtledemo, lib2to3, pydoc_data skipped",
        "python": sys.version.split()[0],
        "seed": seed,
        "heldout_fraction": heldout,
        "distinct_docstrings": len(docs),
        "pairs": len(records),
        "pairs_heldout": len(held),
        "train_sentences": len(train_sentences),
        "sha256": {os.path.basename(p): _sha256(p) for p in (pairs_path, sent_path)},
        "command": "python tools/build_corpus.py " + " ".join(sys.argv[1:]),
    }
    with open(os.path.join(out, "MANIFEST.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", default=os.path.join("examples", "data", "stdlib"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout", type=float, default=0.2, help="fraction of pairs held out")
    args = p.parse_args(argv)
    manifest = build(args.out, args.seed, args.heldout)
    print(json.dumps({k: v for k, v in manifest.items() if k != "sha256"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

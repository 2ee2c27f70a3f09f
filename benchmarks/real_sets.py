"""Retrieval sets and training text built offline from what every checkout and Python has.

For the real-model benchmarks (``real_quality.py``, ``real_student.py``); nothing here is
derived from model weights, and everything is rebuilt the same way from the same inputs:

* ``docstrings``: the committed held-out split of ``examples/data/stdlib`` (472 docstring
  summary -> body pairs; ``tarka_jax.testing.demo``).
* ``code``: a harder, cross-modal set from the running Python's standard-library sources:
  a function's docstring summary -> the function's code with its docstring removed, among
  every other function of the set (all Python code, many near-duplicates). Functions come
  from *held-out modules* only (a stable hash of the module path, 1 in 4), so training text
  (:func:`train_texts`, :func:`tokenizer_texts`) never contains them.

``python benchmarks/real_sets.py`` prints the sizes.
"""

from __future__ import annotations

import ast
import hashlib
import os
import random
import sysconfig

_SKIP = ("test", "tests", "idlelib", "turtledemo", "lib2to3", "pydoc_data", "site-packages",
         "ensurepip", "__pycache__")


def _stdlib_files() -> list[tuple[str, str]]:
    """(module path relative to the stdlib, absolute path) of every stdlib .py file, sorted."""
    root = sysconfig.get_paths()["stdlib"]
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP and not d.startswith("test"))
        for name in sorted(files):
            if name.endswith(".py") and not name.startswith("test"):
                path = os.path.join(folder, name)
                out.append((os.path.relpath(path, root), path))
    return out


def is_heldout_module(relpath: str) -> bool:
    """1 module in 4, by a hash of its path (the same on every machine and run)."""
    return hashlib.sha256(relpath.encode()).digest()[0] % 4 == 0


def _functions(path: str) -> list[tuple[str, str]]:
    """(docstring summary, code without the docstring) of the file's documented functions."""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    lines = source.splitlines()
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node)
        if not doc or not node.body or not isinstance(node.body[0], ast.Expr):
            continue
        summary = " ".join(doc.strip().split("\n\n")[0].split())
        first, last = node.body[0].lineno - 1, node.body[0].end_lineno
        code = "\n".join(lines[node.lineno - 1:first] + lines[last:node.end_lineno])
        if len(summary.split()) >= 4 and 80 <= len(code) <= 1500 and len(node.body) > 1:
            out.append((summary, code))
    return out


def code_pairs(max_pairs: int = 600, seed: int = 0) -> list[dict]:
    """Held-out modules' functions as {"query": summary, "document": code}; unique queries."""
    seen, pairs = set(), []
    for rel, path in _stdlib_files():
        if not is_heldout_module(rel):
            continue
        for summary, code in _functions(path):
            if summary not in seen and code not in seen:
                seen.update((summary, code))
                pairs.append({"query": summary, "document": code, "module": rel})
    random.Random(seed).shuffle(pairs)
    return pairs[:max_pairs]


def docstring_pairs() -> list[dict]:
    """The committed held-out docstring pairs as {"query": summary, "document": body}."""
    from tarka_jax.testing.demo import load_corpus

    return [{"query": p["summary"], "document": p["body"]}
            for p in load_corpus().split("heldout")]


def _heldout_texts() -> set[str]:
    return {t for pairs in (docstring_pairs(), code_pairs(max_pairs=10**9))
            for p in pairs for t in (p["query"], p["document"])}


def train_texts(n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` distillation texts, none of them held out: 3/4 docstring-corpus training texts
    (sentences, train summaries and bodies), 1/4 code of the training modules' functions."""
    from tarka_jax.testing.demo import load_corpus

    held = _heldout_texts()
    prose = [t for t in load_corpus().training_texts() if t not in held]
    code = [c for rel, path in _stdlib_files() if not is_heldout_module(rel)
            for _, c in _functions(path) if c not in held]
    rng = random.Random(seed)
    texts = rng.sample(prose, n - n // 4) + rng.sample(code, n // 4)
    rng.shuffle(texts)
    return texts


def tokenizer_texts() -> list[str]:
    """Text to train the student's vocabulary on: the training modules' source lines and the
    docstring corpus's training texts (none held out)."""
    from tarka_jax.testing.demo import load_corpus

    held = _heldout_texts()
    out = [t for t in load_corpus().training_texts() if t not in held]
    for rel, path in _stdlib_files():
        if is_heldout_module(rel):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            out.extend(line.rstrip() for line in f if line.strip())
    return out


def write_lines(texts, path: str) -> str:
    """One text per line (newlines inside a text become spaces), for the CLI's .txt input."""
    with open(path, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(" ".join(text.split("\n")) + "\n")
    return path


if __name__ == "__main__":
    code = code_pairs(max_pairs=10**9)
    print(f"docstrings: {len(docstring_pairs())} pairs; code: {len(code)} pairs from "
          f"{len({p['module'] for p in code})} held-out modules; tokenizer texts: "
          f"{len(tokenizer_texts())} lines")

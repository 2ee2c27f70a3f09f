"""Every error a user can cause is a TarkaError: no bare ValueError / TypeError raised by the
package, and every exception class it defines derives from TarkaError (AST walk, no imports)."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("tarka_jax", "convert")  # kernels/ raise NotImplementedError by contract (dispatch)
BARE = {"ValueError", "TypeError"}


def _sources():
    for folder in FOLDERS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "models", "testing")]
            for name in filenames:
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    with open(path, encoding="utf-8") as f:
                        yield os.path.relpath(path, ROOT), ast.parse(f.read(), path)


def _name(node) -> str | None:
    if isinstance(node, ast.Call):
        node = node.func
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)


def test_no_bare_value_or_type_error_is_raised():
    bare = [f"{path}:{node.lineno}" for path, tree in _sources() for node in ast.walk(tree)
            if isinstance(node, ast.Raise) and node.exc is not None and _name(node.exc) in BARE]
    assert not bare, f"raise a TarkaError subclass (tarka_jax.errors) instead: {bare}"


def test_every_exception_class_derives_from_tarka_error():
    classes = {}
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = (path, [_name(b) for b in node.bases])

    def derives(name: str, seen=()) -> bool:
        if name == "TarkaError":
            return True
        if name not in classes or name in seen:
            return False
        return any(derives(b, seen + (name,)) for b in classes[name][1])

    errors = {n: v for n, v in classes.items()
              if any(b and (b.endswith("Error") or b == "Exception") for b in v[1])
              or n.endswith("Error")}
    stray = [f"{path}: {n}({', '.join(map(str, bases))})" for n, (path, bases) in errors.items()
             if n != "TarkaError" and not derives(n)]
    assert not stray, f"exception classes outside TarkaError: {stray}"

"""Every import, dotted name and repository path the README and docs/ show still exists.

The layout changes (subpackages, moved modules); what users copy from the docs must not break
silently. Reads README.md, docs/*.md and BENCHMARKS.md: ``from tarka_jax... import ...`` and
``import tarka_jax...`` lines, ``tarka_jax.x.y`` names in backticks, and ``tarka_jax/...py`` /
``kernels/...py`` / ``convert/...py`` paths.
"""

from __future__ import annotations

import glob
import importlib
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "BENCHMARKS.md"),
        *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
OPTIONAL = ("mteb", "torch", "pyarrow", "sentence_transformers", "transformers")


def _text() -> str:
    return "\n".join(open(path, encoding="utf-8").read() for path in DOCS)


def _imports(text: str) -> set[tuple[str, str]]:
    found = set()
    for module, names in re.findall(r"from (tarka_jax[\w.]*) import ([\w, ]+)", text):
        found |= {(module, n.strip().split(" as ")[0]) for n in names.split(",") if n.strip()}
    found |= {(m, "") for m in re.findall(r"^\s*import (tarka_jax[\w.]*)", text, re.M)}
    return found


def _dotted(text: str) -> set[str]:
    return {m.rstrip(".") for m in re.findall(r"`(tarka_jax(?:\.\w+)+)", text)}


def _resolve(name: str):
    """Import the longest importable prefix of ``name``, then getattr the rest."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in OPTIONAL:
                pytest.skip(f"{name} needs {e.name}")
            continue
        try:
            for attribute in parts[cut:]:  # a lazy attribute may import an optional package
                obj = getattr(obj, attribute)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in OPTIONAL:
                pytest.skip(f"{name} needs {e.name}")
            raise
        return obj
    raise ImportError(name)


@pytest.mark.parametrize("module,name", sorted(_imports(_text())))
def test_documented_import_works(module, name):
    obj = _resolve(module)
    if name:
        assert hasattr(obj, name) or importlib.import_module(f"{module}.{name}")


@pytest.mark.parametrize("name", sorted(_dotted(_text())))
def test_documented_dotted_name_exists(name):
    _resolve(name)


def test_documented_repository_paths_exist():
    paths = set(re.findall(r"(?<![\w/.-])((?:tarka_jax|kernels|convert|benchmarks|tools|tests|"
                           r"examples|notebooks|ci)/[\w/.-]*\w\.(?:py|sh|toml|ipynb))", _text()))
    missing = sorted(p for p in paths if not os.path.exists(os.path.join(ROOT, p)))
    assert not missing, f"docs name files that do not exist: {missing}"

"""The layering of docs/layout.md, enforced: imports only go up the table, modules stay small.

Every import of every module under ``tarka_jax/``, ``kernels/`` and ``convert/``
is read from the AST -- imports inside functions included, since a lazy import
is still a dependency -- and checked against :data:`LAYERS`. A new module must
be placed in the table (an unplaced module fails), which is the point: where a
file goes is decided once, here and in docs/layout.md.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Repository folder -> the package it installs as (pyproject.toml package-dir).
PACKAGE_DIRS = {"tarka_jax": "tarka_jax", "kernels": "tarka_jax.kernels",
                "convert": "tarka_jax.convert"}

# Package (or module) -> layer: one entry per subpackage. A module may import only from
# layers <= its own; the longest matching prefix wins. Every package's ``cli`` module is an
# entry point (ENTRY): it may import anything but the leaf, and nothing imports it (the
# ``tarka_jax.cli`` table loads it by name). LEAF modules (tests', notebooks' and tools'
# helpers) may import anything, and nothing outside them may import them.
ENTRY, LEAF = 98, 99
LAYERS = {
    "tarka_jax.kernels": 1,
    "tarka_jax._version": 2, "tarka_jax.errors": 2, "tarka_jax.files": 2, "tarka_jax.runtime": 2,
    "tarka_jax.text": 3,
    "tarka_jax.nn": 4,
    "tarka_jax.convert": 5,
    "tarka_jax.inference": 6, "tarka_jax": 6,  # the package facade re-exports the inference API
    "tarka_jax.evaluation": 7, "tarka_jax.corpus": 7, "tarka_jax.mteb": 7, "tarka_jax.serve": 7,
    "tarka_jax.train": 8,
    "tarka_jax.distill": 9, "tarka_jax.finetune": 9,
    "tarka_jax.recipe": 10,
    "tarka_jax.cli": ENTRY, "tarka_jax.__main__": ENTRY,
    "tarka_jax.testing": LEAF,
}
NAMES = {1: "kernels", 2: "base (errors, files, runtime)", 3: "text", 4: "nn (the model)",
         5: "convert (formats)", 6: "inference", 7: "clients of inference (corpus, mteb, "
         "evaluation, serve)", 8: "training core (train)", 9: "training loops (distill, finetune)",
         10: "recipe", ENTRY: "entry points", LEAF: "test/notebook helpers"}
MAX_LINES = 400


def _modules() -> dict[str, str]:
    """module name -> file path, for every .py file of the three package folders."""
    out = {}
    for folder, package in PACKAGE_DIRS.items():
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "models")]
            rel = os.path.relpath(dirpath, base)
            prefix = package if rel == "." else package + "." + rel.replace(os.sep, ".")
            for name in filenames:
                if name.endswith(".py"):
                    module = prefix if name == "__init__.py" else f"{prefix}.{name[:-3]}"
                    out[module] = os.path.join(dirpath, name)
    return out


MODULES = _modules()


def layer_of(module: str) -> int:
    if module.endswith(".cli"):
        return ENTRY
    best = None
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best)):
            best = prefix
    if best is None:
        raise KeyError(module)
    return LAYERS[best]


def _imports(module: str, path: str) -> list[tuple[int, str]]:
    """(line, imported tarka_jax module) for every import in the file, at any depth."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                # `from pkg import submodule` depends on the submodule, not just pkg.
                target = f"{base}.{a.name}"
                found.append((node.lineno, target if target in MODULES else base))
    return [(line, name) for line, name in found
            if name == "tarka_jax" or name.startswith("tarka_jax.")]


def test_every_module_has_a_layer():
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"place these modules in LAYERS (and docs/layout.md): {unplaced}"


def test_imports_only_go_up_the_layers():
    bad = []
    for module, path in sorted(MODULES.items()):
        mine = layer_of(module)
        for line, target in _imports(module, path):
            theirs = layer_of(target)
            if module == target or (mine == LEAF):
                continue
            if theirs == LEAF or theirs > mine:
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} {module} [{NAMES[mine]}] "
                           f"imports {target} [{NAMES[theirs]}]")
    assert not bad, "imports against the layering (docs/layout.md):\n" + "\n".join(bad)


def test_kernels_import_nothing_of_tarka_jax_outside_kernels():
    for module, path in MODULES.items():
        if module.startswith("tarka_jax.kernels"):
            outside = [t for _, t in _imports(module, path)
                       if not t.startswith("tarka_jax.kernels")]
            assert not outside, (module, outside)


@pytest.mark.parametrize("folder", ["tarka_jax", "convert"])
def test_modules_are_small(folder):
    """One job per module (kernels/ is checked by its own owner's tests)."""
    long = {}
    for module, path in MODULES.items():
        if os.path.relpath(path, ROOT).split(os.sep)[0] == folder:
            with open(path, encoding="utf-8") as f:
                n = sum(1 for _ in f)
            if n > MAX_LINES:
                long[module] = n
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_checker_catches_an_upward_import(tmp_path):
    """The walk sees imports inside functions and resolves relative ones."""
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from ..recipe import evaluate\n    import tarka_jax.cli\n")
    found = _imports("tarka_jax.distill.probe", str(path))
    assert [t for _, t in found] == ["tarka_jax.recipe.evaluate", "tarka_jax.cli"]
    assert all(layer_of(t) > layer_of("tarka_jax.distill.probe") for _, t in found)


def test_the_table_places_packages_not_modules():
    """One entry per subpackage: the folders show the layering, the table only orders them."""
    packages = {m for m, p in MODULES.items() if p.endswith("__init__.py")}
    top_level = {m for m in MODULES if m.count(".") == 1}
    stray = [name for name in LAYERS if name not in packages and name not in top_level]
    assert not stray, f"LAYERS names modules inside a package: {stray}"
    unplaced = [p for p in packages if p not in LAYERS]
    assert not unplaced, f"subpackages without their own LAYERS entry: {unplaced}"


def test_docs_layout_names_every_module():
    with open(os.path.join(ROOT, "docs", "layout.md"), encoding="utf-8") as f:
        page = f.read()
    unnamed = []
    for path in MODULES.values():
        rel = os.path.relpath(path, ROOT)
        folder, name = os.path.split(rel)
        if name == "__init__.py" and folder != "tarka_jax":
            continue  # a package is named by its folder's heading
        short = rel[len("tarka_jax/"):] if rel.startswith("tarka_jax/") else rel
        if short not in page and not (name == "__init__.py" and rel in page):
            unnamed.append(rel)
    assert not unnamed, f"docs/layout.md does not name: {unnamed}"


def test_the_two_loops_are_clients_of_the_core_not_of_each_other():
    """distill and finetune share tarka_jax.train; neither imports the other (issue 27)."""
    bad = []
    for module, path in MODULES.items():
        for mine, other in (("tarka_jax.distill", "tarka_jax.finetune"),
                            ("tarka_jax.finetune", "tarka_jax.distill")):
            if module == mine or module.startswith(mine + "."):
                bad += [f"{module}:{line} imports {t}" for line, t in _imports(module, path)
                        if t == other or t.startswith(other + ".")]
    assert not bad, bad

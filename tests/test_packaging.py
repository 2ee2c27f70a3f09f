"""The wheel ships every subpackage and the built-in model, not only the editable install.

``pyproject.toml`` lists packages by name; CI installs the checkout editable, which would hide
a subpackage missing from that list. This builds the wheel, installs it into a folder of its
own and runs an interpreter that sees the wheel's ``tarka_jax`` and the test venv's
dependencies, but not the checkout (``-S``: no ``.pth`` files, so no editable finder).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow
#: repository folder -> the package it installs as (pyproject.toml's package-dir)
FOLDERS = {"tarka_jax": "tarka_jax", "kernels": "tarka_jax.kernels", "convert": "tarka_jax.convert"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    wheels, target = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("site")
    # A fresh copy: setuptools builds in SOURCE/build, and a stale one would hide a missing package.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source)
    for folder in FOLDERS:
        shutil.copytree(os.path.join(ROOT, folder), source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, timeout=600, cwd=str(wheels))
    (wheel,) = glob.glob(os.path.join(wheels, "tarka_jax-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), wheel], check=True,
                   timeout=600)
    return str(target)


def _run(installed: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([installed, sysconfig.get_paths()["purelib"],
                                         sysconfig.get_paths()["platlib"]])
    return subprocess.run([sys.executable, "-S", *args], env=env, cwd=installed,
                          capture_output=True, text=True, timeout=600)


def _packages(folder: str, prefix: str) -> set[str]:
    """Dotted names of the packages (folders with __init__.py) under ``folder`` as ``prefix``."""
    found = set()
    for init in glob.glob(os.path.join(folder, "**", "__init__.py"), recursive=True):
        rel = os.path.relpath(os.path.dirname(init), folder)
        if "models" not in rel.split(os.sep):  # the built-in model is data, not code
            found.add(prefix if rel == "." else f"{prefix}.{rel.replace(os.sep, '.')}")
    return found


def test_the_wheel_holds_every_package_of_the_checkout(installed):
    checkout = set().union(*(_packages(os.path.join(ROOT, f), p) for f, p in FOLDERS.items()))
    shipped = _packages(os.path.join(installed, "tarka_jax"), "tarka_jax")
    assert checkout == shipped, (sorted(checkout - shipped), sorted(shipped - checkout))


def test_every_subpackage_imports_from_the_wheel_and_the_command_runs(installed):
    packages = sorted(_packages(os.path.join(installed, "tarka_jax"), "tarka_jax"))
    probe = ("import importlib, tarka_jax\n"
             f"for name in {packages!r}:\n"
             "    m = importlib.import_module(name)\n"
             "    assert m.__file__.startswith(" + repr(installed) + "), m.__file__\n"
             "from tarka_jax.convert.sources import builtin_folder\n"
             "print(builtin_folder('demo-mini'))\n")
    done = _run(installed, "-c", probe)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith(installed)
    helped = _run(installed, "-m", "tarka_jax", "--help")
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert "embed-corpus" in helped.stdout and "finetune" in helped.stdout

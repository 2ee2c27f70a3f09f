"""Every notebook in notebooks/ runs top to bottom (nbclient), on small configs.

Notebooks only call the library (``tarka_jax.testing.notebook``, ``tarka_jax.testing.demo``), so
this is a test of those calls as a user makes them. Each runs in a fresh kernel
(this venv's Python) with matplotlib on Agg, in a temporary working folder.
"""

from __future__ import annotations

import pathlib
import time

import ipykernel  # noqa: F401  (the kernel the notebooks run in; a hard dependency of the test extras)
import matplotlib  # noqa: F401
import nbclient
import nbformat
import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NEEDS_TORCH = {"convert"}  # sentence-transformers is the parity reference there
#: the slowest notebook runs in leg 1 only (CI budget; leg 2 runs the distill CLI tests)
SLOW = {"distill"}
TIMEOUT_S = 300  # per cell; each notebook takes well under a minute on 2 cores


def _params():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    marks = {n: [pytest.mark.torch] * (n in NEEDS_TORCH) + [pytest.mark.slow] * (n in SLOW)
             for n in names}
    return [pytest.param(n, marks=marks[n]) for n in names]


def test_notebooks_all_listed():
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == {
        "quickstart", "convert", "distill", "kernels"}


@pytest.mark.parametrize("name", _params())
def test_notebook_executes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # "python3" is ipykernel's spec; jupyter_client runs it with this interpreter.
    client = nbclient.NotebookClient(
        nb, timeout=TIMEOUT_S, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"notebooks/{name}.ipynb failed:\n{str(e)[-3000:]}")
    elapsed = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    print(f"notebooks/{name}.ipynb: {elapsed:.1f} s")

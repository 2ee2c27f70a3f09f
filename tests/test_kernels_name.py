"""The repository's ``kernels/`` folder never shadows Hugging Face's ``kernels`` package.

``python -m ...`` and ``python -c ...`` put the current directory on ``sys.path``; run from the
repository root, ``import kernels`` would find our folder, while transformers 5.25+ imports
Hugging Face's ``kernels`` (``transformers.integrations.hub_kernels``). The folder steps aside
(``kernels/_not_top_level.py``): these tests run real interpreters from the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _from_root(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_without_another_kernels_the_folder_is_an_empty_stand_in():
    """No site-packages (``-S``): ``import kernels`` gives an empty module that says why."""
    probe = ("import kernels\n"
             "assert getattr(kernels, '__version__', 'N/A') == 'N/A'\n"
             "try:\n    kernels.attention\nexcept AttributeError as e:\n    print(e)\n")
    done = _from_root("-S", "-c", probe)
    assert done.returncode == 0, done.stderr
    assert "tarka-jax's kernels/ folder" in done.stdout


@pytest.mark.torch
def test_hugging_face_kernels_is_what_import_kernels_gets_from_the_root():
    hf = pytest.importorskip("kernels")  # the test process does not have the root on sys.path
    assert not os.path.realpath(hf.__file__).startswith(os.path.join(ROOT, "kernels"))
    done = _from_root("-c", "import transformers.integrations.hub_kernels, kernels\n"
                            "print(kernels.__file__)")
    assert done.returncode == 0, done.stderr
    assert os.path.realpath(done.stdout.strip()) == os.path.realpath(hf.__file__)


@pytest.mark.torch
@pytest.mark.slow
def test_pytest_runs_from_the_repository_root_with_hugging_face_kernels():
    """The README's failure: ``python -m pytest tests/test_layers.py`` from the root."""
    pytest.importorskip("kernels")
    done = _from_root("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                      "tests/test_layers.py", "-k", "rmsnorm or rotary", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout

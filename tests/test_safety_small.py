"""Small edges: a script's --help writes nothing; an error message is printed whole."""

from __future__ import annotations

import os
import subprocess
import sys

from tarka_jax import cli
from tarka_jax.cli import Command, main, register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_make_tiny_models_help_writes_nothing(tmp_path):
    script = os.path.join(ROOT, "examples", "make_tiny_models.py")
    r = subprocess.run([sys.executable, script, "--help"], cwd=tmp_path, capture_output=True,
                       check=False,
                       text=True, timeout=300)
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr
    assert os.listdir(tmp_path) == []  # no folder named --help
    assert not os.path.exists(os.path.join(ROOT, "examples", "--help"))


def test_a_multi_line_error_is_printed_whole(capsys):
    def fail(args):
        raise FileNotFoundError("'owner/model' could not be fetched from the hub (404 Client "
                                "Error.\n\nRepository Not Found for url: https://x/y.\nCheck "
                                "the name.)")

    register(Command("safety-fail", "test only", lambda p: None, fail))
    try:
        assert main(["safety-fail"]) == 2
    finally:
        cli._COMMANDS.pop("safety-fail")
    err = capsys.readouterr().err.strip()
    assert err == ("tarka-jax safety-fail: error: 'owner/model' could not be fetched from the "
                   "hub (404 Client Error. Repository Not Found for url: https://x/y. Check the "
                   "name.)")

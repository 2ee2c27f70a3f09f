"""tarka_jax.runtime.compile_cache: where the cache goes, how it is turned off, that JAX writes to it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tarka_jax.runtime import compile_cache


def test_default_path_is_under_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert compile_cache.cache_path() == tmp_path / "tarka-jax" / "jax-compilation"


@pytest.mark.parametrize("value", ["0", "off", "FALSE"])
def test_env_var_turns_it_off(monkeypatch, value):
    monkeypatch.setenv(compile_cache.ENV_VAR, value)
    assert compile_cache.cache_path() is None
    assert compile_cache.enable_compilation_cache() is None


def test_env_var_relocates_and_explicit_path_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "here"))
    assert compile_cache.cache_path() == tmp_path / "here"
    assert compile_cache.cache_path(tmp_path / "there") == tmp_path / "there"


def test_a_compiled_program_lands_in_the_cache(tmp_path):
    # A fresh process: the cache must be configured before its first compilation.
    code = (
        "import jax, jax.numpy as jnp\n"
        "from tarka_jax.runtime.compile_cache import enable_compilation_cache\n"
        f"print(enable_compilation_cache({str(tmp_path)!r}))\n"
        "jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(7)).block_until_ready()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == str(tmp_path)
    assert any(tmp_path.iterdir()), "JAX wrote nothing into the cache directory"

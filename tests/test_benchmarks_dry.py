"""Dry runs of the benchmark scripts (tiny sizes, CPU) so they cannot rot unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.torch
def test_gpu_e2e_dry_run(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_e2e.py"), str(tmp_path), "--dry-run"],
        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.load(open(tmp_path / "e2e.json"))
    for name in ("xla", "xla_packed", "pallas_triton", "pallas_triton_packed"):
        # float32 on CPU (Pallas in interpret mode): the same embeddings as ST.
        assert data[f"tarka_jax_{name}_min_cosine_vs_st"] > 0.99999, name
        assert data[f"tarka_jax_{name}_tokens_per_s"] > 0
    assert data["st_tokens_per_s"] > 0

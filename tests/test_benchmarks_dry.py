"""Dry runs of the benchmark scripts (tiny sizes, CPU) so they cannot rot unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.torch
def test_first_embedding_dry_run(tmp_path):
    """One-layer model: the three fresh CLI processes run, and the warm one loads the program."""
    out = tmp_path / "first.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "first_embedding.py"), "--layers", "1",
         "--max-seq-length", "64", "--folder", str(tmp_path / "model"), "--json", str(out)],
        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.load(open(out))["rows"]
    assert set(rows) == {"cold cache", "warm cache", "cache off"}
    assert rows["cold cache"]["programs"].get("exported", 0) >= 1
    assert rows["warm cache"]["programs"].get("loaded", 0) >= 1  # no model trace when warm
    assert not rows["warm cache"]["programs"].get("exported")
    assert rows["cache off"]["programs"] is None
    assert "/jax/compilation_cache/cache_retrieval_time_sec" in rows["warm cache"]["cache_events"]


def test_mine_negatives_refuses_to_replace_a_file(tmp_path):
    out = tmp_path / "triplets.jsonl.gz"
    out.write_bytes(b"keep me")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "mine_negatives.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "pass --force" in result.stderr
    assert out.read_bytes() == b"keep me"


def test_model_load_dry_run(jax_only_model, tmp_path):
    """One round on a tiny folder: every step runs in its own process and reports its times."""
    out = tmp_path / "load.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "model_load.py"), "--folder",
         jax_only_model, "--rounds", "1", "--json", str(out)],
        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(out))["summary"]
    assert set(summary) == {"read_new", "weights", "ready", "tokenizer", "from_pretrained"}
    assert all(row["median_s"] > 0 and row["ratio_to_read"] > 0 for row in summary.values())


@pytest.mark.torch
def test_serve_load_dry_run(tmp_path):
    """A one-layer model at 64 tokens, 2 s per cell: tarka-jax serve and the
    sentence-transformers endpoint both answer every request, and tarka's stage metrics move."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    out = tmp_path / "load.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "serve_load.py"), "--folder",
         str(tmp_path / "work"), "--layers", "1", "--max-seq-length", "64", "--duration", "2",
         "--clients", "1", "4", "--engines", "tarka", "st", "--start-timeout", "400",
         "--json", str(out)],
        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    rows = json.load(open(out))["rows"]
    assert {(r["engine"], r["clients"]) for r in rows} == {
        (e, c) for e in ("tarka", "st") for c in (1, 4)}
    for row in rows:
        assert row["requests"] > 0 and row["errors"] == 0, row
        assert row["tokens_per_s"] > 0 and row["p50_s"] <= row["p99_s"]
    for row in (r for r in rows if r["engine"] == "tarka"):
        stages = row["tarka"]["stages"]
        assert stages["device"]["count"] > 0 and stages["tokenize"]["count"] > 0
        assert row["tarka"]["compiles_while_serving"] == 0


def _onnx_python() -> str | None:
    """A Python with the ONNX engines' stack (ci/constraints-onnx.txt): this one, or .venv-onnx."""
    for python in (sys.executable, os.path.join(ROOT, ".venv-onnx", "bin", "python")):
        code = "import onnxruntime, optimum.onnxruntime, sentence_transformers"
        if os.path.exists(python) and subprocess.run(
                [python, "-c", code], capture_output=True).returncode == 0:
            return python
    return None


def _cpu_encode(tmp_path, *extra):
    out = tmp_path / "cpu.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "cpu_encode.py"), "--layers", "1",
         "--max-seq-length", "64", "--folder", str(tmp_path / "model"), "--texts-per-mix", "3",
         "--repeats", "1", "--mixes", "queries", "--json", str(out), *extra],
        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vector extensions:" in result.stdout and "peak RSS per engine" in result.stdout
    return json.load(open(out))


@pytest.mark.torch
def test_cpu_encode_dry_run(tmp_path):
    """Each engine in its own process, rounds interleaved: medians, peak RSS, diff vs ST."""
    data = _cpu_encode(tmp_path, "--engines", "st-torch", "tarka", "--rounds", "2")
    assert data["cpu"]["model"] and isinstance(data["cpu"]["vector_extensions"], list)
    assert len(data["load_average"]) == 4  # 2 engines x 2 rounds
    rows = {r["engine"]: r for r in data["engines"]}
    assert set(rows) == {"st-torch", "tarka"}
    assert all(r["peak_rss_gib"] > 0 for r in rows.values())
    queries = rows["tarka"]["mixes"]["queries"]
    assert queries["tokens_per_s"] > 0 and queries["max_abs_diff_vs_st_fp32"] < 1e-5
    assert rows["st-torch"]["mixes"]["queries"]["max_abs_diff_vs_st_fp32"] == 0.0


@pytest.mark.torch
def test_cpu_encode_onnx_dry_run(tmp_path):
    """The ONNX Runtime engines (fp32, dynamic int8) through sentence-transformers' backends,
    exported outside the model folder; skipped without their venv (ci/constraints-onnx.txt)."""
    python = _onnx_python()
    if python is None:
        pytest.skip("no Python with onnxruntime + optimum-onnx (ci/constraints-onnx.txt)")
    data = _cpu_encode(tmp_path, "--engines", "onnx", "onnx-int8", "--onnx-python", python,
                       "--export-dir", str(tmp_path / "onnx"))
    rows = {r["engine"]: r for r in data["engines"]}
    assert set(rows) == {"st-torch", "onnx", "onnx-int8"}  # st-torch: the reference, always run
    assert rows["onnx"]["mixes"]["queries"]["max_abs_diff_vs_st_fp32"] < 1e-4
    assert rows["onnx-int8"]["mixes"]["queries"]["max_abs_diff_vs_st_fp32"] < 0.5
    assert not os.path.exists(tmp_path / "model" / "onnx")  # the model folder is left alone
    assert any(p.name == "model.onnx" for p in (tmp_path / "onnx").rglob("*.onnx"))

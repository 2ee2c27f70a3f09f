"""benchmarks/gpu_check.sh --dry-run: the GPU script's plumbing, on CPU at tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow  # runs in leg 1 only (CI time budget)
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils timeout")
def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, DEADLINE_S="420")
    env.pop("LAYERS", None)
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "pallas/cudnn" not in proc.stdout  # the header abbreviates
    assert "pal/cudnn" in proc.stdout and "goal window fwd" in proc.stdout

    checks = json.loads((tmp_path / "checks_jax.json").read_text())
    assert checks["ok"], checks
    rows = json.loads((tmp_path / "attention_jax.json").read_text())["rows"]
    timed = {(r["impl"], r["pass"]) for r in rows if "ms" in r}
    assert {("pallas", "fwd"), ("pallas", "fwd+bwd"), ("xla", "fwd"), ("xla", "fwd+bwd")} <= timed
    for r in rows:
        assert r["flops"] > 0

    torch_result = json.loads((tmp_path / "attention_torch.json").read_text())
    if importlib.util.find_spec("torch") is not None:
        assert any(r["impl"] == "sdpa" and "ms" in r for r in torch_result["rows"]), torch_result
    else:
        assert "error" in torch_result

    e2e = json.loads((tmp_path / "e2e.json").read_text())  # benchmarks/gpu_e2e.py --dry-run
    if importlib.util.find_spec("torch") is not None:
        for name in ("xla", "xla_packed", "pallas_triton", "pallas_triton_packed"):
            # float32 on CPU (Pallas in interpret mode): the same embeddings as ST.
            assert e2e[f"tarka_jax_{name}_min_cosine_vs_st"] > 0.99999, name
            assert e2e[f"tarka_jax_{name}_tokens_per_s"] > 0
        assert e2e["st_tokens_per_s"] > 0
    else:
        assert "skipped" in e2e, e2e

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary and summary[0]["tflops"]["pallas"] > 0
    assert (tmp_path / "table.txt").exists()

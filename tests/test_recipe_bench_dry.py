"""The efficiency scripts of issue 5 at dry sizes on CPU (their own processes: fresh jax)."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(args, tmp_path, timeout=240):
    env = dict(os.environ, JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow  # runs in leg 1 only (CI time budget)
def test_gpu_train_mfu_dry_run(tmp_path):
    out = _run(["benchmarks/gpu_train_mfu.py", str(tmp_path), "--dry-run"], tmp_path)
    assert "MFU" in out
    result = json.loads((tmp_path / "train_mfu.json").read_text())
    assert result["dry_run"] and 0 < result["mfu"] and result["steps_timed"] >= 2
    flops = result["flops"]
    assert flops["attention_flops"] > 0 and flops["n_student"] < flops["n_teacher"]


def test_mfu_flop_count_of_the_tarka_config():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import jax
        from gpu_train_mfu import attention_flops, param_counts
        from train_step import configs

        from tarka_jax.nn.encoder import init_params
    finally:
        sys.path.pop(0)
    student, teacher = configs("full", 262_144)
    shapes = jax.eval_shape(lambda: init_params(student, jax.random.key(0)))
    assert param_counts(shapes) == (101_536_512, 4_718_592)  # docs/numerics.md, "Sizes"
    # Sliding layers see |i - j| <= 256 of 512: 20 sliding + 4 full layers.
    i = list(range(512))
    sliding = sum(min(x + 257, 512) - max(x - 256, 0) for x in i)
    assert attention_flops(teacher, 1, 512) == 4 * 3 * 256 * (20 * sliding + 4 * 512 * 512)


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_train_step_benchmark_tiny(tmp_path):
    out = _run(["benchmarks/train_step.py", "--sizes", "tiny", "--steps", "1", "--json",
                str(tmp_path / "r.json")], tmp_path)
    assert "ratio jax/torch" in out
    row = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert row["jax"]["tokens_per_s"] > 0 and row["torch"]["tokens_per_s"] > 0


def test_real_student_prepare_writes_an_embedding_table_only_run(tmp_path, monkeypatch):
    """``benchmarks/real_student.py prepare``: both TOMLs are valid runs, and the one
    docs/recipe.md recommends first leaves exactly the student's embedding table trainable."""
    import jax

    from tarka_jax.distill.config import load_config
    from tarka_jax.nn.encoder import init_params
    from tarka_jax.testing.tiny import tiny_config
    from tarka_jax.train.optim import freeze_labels

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import real_sets
    import real_student

    monkeypatch.setattr(real_sets, "tokenizer_texts", lambda: ["a line of text"])
    monkeypatch.setattr(real_sets, "train_texts", lambda n: [f"text {i}" for i in range(n)])
    monkeypatch.setattr(real_sets, "docstring_pairs", lambda: [{"document": "a doc"}])
    monkeypatch.setattr(real_sets, "code_pairs", lambda n=0: [{"document": "def f(): pass"}])
    real_student.prepare(str(tmp_path), n_train=8, steps=10, batch_size=4, learning_rate=2e-5,
                         embed_learning_rate=1e-4, freeze="", every=5)

    every_layer = load_config(str(tmp_path / "distill.toml"))
    table_only = load_config(str(tmp_path / "distill-embed.toml"))
    assert every_layer.optimizer.learning_rate == 2e-5 and not every_layer.optimizer.freeze
    assert table_only.optimizer.learning_rate == 1e-4
    params = init_params(tiny_config(64, 32, 2, (48, 32)), jax.random.PRNGKey(0))
    labels = freeze_labels(table_only.optimizer.freeze)(params)
    trainable = {jax.tree_util.keystr(path) for path, label
                 in jax.tree_util.tree_flatten_with_path(labels)[0] if label == "train"}
    assert trainable == {"['encoder']['embed_tokens']['embedding']"}, trainable

"""tarka_jax.runtime.program_cache: exported forward programs give the same embeddings and are reused.

Runs on the torch-free random checkpoint. The exported program is the same
StableHLO the plain jitted forward compiles, so the embeddings agree exactly here
(checked at 1e-6 so that another jax version's fusion may round differently).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tarka_jax.runtime import program_cache
from tarka_jax.testing.reference import SAMPLE_TEXTS, long_text

TOL = 1e-6
TEXTS = ["", "x", SAMPLE_TEXTS[0]] + [long_text(1 + i % 4, seed=i) for i in range(10)]


@pytest.fixture
def cache_dir(tmp_path):
    yield tmp_path / "programs"
    program_cache.disable()


def _encode(model_path: str):
    from tarka_jax import Embedder

    return Embedder.from_pretrained(model_path).encode(TEXTS, batch_size=6)


def test_exported_programs_equal_the_jitted_forward_and_are_reused(jax_only_model, cache_dir):
    program_cache.disable()
    ref = _encode(jax_only_model)
    first = program_cache.enable(cache_dir)
    got = _encode(jax_only_model)
    assert first.stats["exported"] >= 1 and not first.stats["loaded"]
    files = sorted(cache_dir.glob("*.jaxexport"))
    assert len(files) == first.stats["exported"]
    assert not list(cache_dir.glob("*.partial*"))
    second = program_cache.enable(cache_dir)  # as a new process finds the directory
    again = _encode(jax_only_model)
    assert second.stats["loaded"] == len(files) and not second.stats["exported"]
    assert np.abs(got - ref).max() <= TOL and np.abs(again - ref).max() <= TOL


def test_a_damaged_program_is_reported_and_replaced(jax_only_model, cache_dir):
    program_cache.disable()
    ref = _encode(jax_only_model)
    program_cache.enable(cache_dir)
    _encode(jax_only_model)
    files = sorted(cache_dir.glob("*.jaxexport"))
    for path in files:
        path.write_bytes(b"not an exported program")
    cache = program_cache.enable(cache_dir)
    with pytest.warns(UserWarning, match="could not be loaded"):
        got = _encode(jax_only_model)
    assert cache.stats["replaced"] == cache.stats["exported"] == len(files)
    assert np.abs(got - ref).max() <= TOL
    assert program_cache.enable(cache_dir) and _encode(jax_only_model) is not None
    assert program_cache.active().stats["loaded"] == len(files)  # the rewritten files load


def test_a_program_export_refuses_runs_traced(jax_only_model, cache_dir, monkeypatch):
    import jax

    program_cache.disable()
    ref = _encode(jax_only_model)

    def refuse(*args, **kwargs):
        raise ValueError("Cannot serialize code with custom calls")  # what Pallas Triton gets

    monkeypatch.setattr(jax.export, "export", refuse)
    cache = program_cache.enable(cache_dir)
    got = _encode(jax_only_model)
    assert cache.stats["not_exportable"] >= 1 and not cache.stats["exported"]
    assert not cache_dir.exists() or not list(cache_dir.iterdir())
    assert np.abs(got - ref).max() <= TOL


def test_the_key_names_everything_the_program_depends_on(monkeypatch):
    import jax.numpy as jnp

    from tarka_jax.nn.encoder import embed

    x = {"input_ids": jnp.ones((2, 8), jnp.int32)}
    base = program_cache.program_key(embed, {"dtype": "float32", "segments_per_row": 1}, (x,))
    changed = [
        program_cache.program_key(embed, {"dtype": "bfloat16", "segments_per_row": 1}, (x,)),
        program_cache.program_key(embed, {"dtype": "float32", "segments_per_row": 2}, (x,)),
        program_cache.program_key(embed, {"dtype": "float32", "segments_per_row": 1},
                                  ({"input_ids": jnp.ones((4, 8), jnp.int32)},)),
        program_cache.program_key(embed, {"dtype": "float32", "segments_per_row": 1},
                                  ({"input_ids": jnp.ones((2, 8), jnp.int16)},)),
    ]
    monkeypatch.setattr(program_cache, "source_fingerprint", lambda: "edited source")
    changed.append(program_cache.program_key(
        embed, {"dtype": "float32", "segments_per_row": 1}, (x,)))
    assert len({base, *changed}) == 1 + len(changed)


# The real CLI in two fresh processes sharing one cache directory.
_CHILD = (
    "import json, sys\n"
    "from tarka_jax.runtime import program_cache\n"
    "from tarka_jax.cli import main\n"
    "status = main(sys.argv[1:])\n"
    "print(json.dumps(dict(program_cache.active().stats)))\n"
    "raise SystemExit(status)\n"
)


def test_a_second_cli_process_loads_the_program(jax_only_model, tmp_path):
    env = dict(os.environ, TARKA_JAX_COMPILATION_CACHE=str(tmp_path / "cache"))
    outs, stats = [], []
    for run in range(2):
        out = tmp_path / f"emb{run}.npy"
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, "embed", "--model", jax_only_model, "--query",
             "-o", str(out), "a short query", "and another one"],
            env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        stats.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        outs.append(np.load(out))
    assert stats[0].get("exported", 0) >= 1 and not stats[0].get("loaded")
    assert stats[1].get("loaded") == stats[0]["exported"] and not stats[1].get("exported")
    assert list((tmp_path / "cache" / "programs").glob("*.jaxexport"))
    np.testing.assert_array_equal(outs[0], outs[1])


def _four_device_worker(model_path: str, directory: str) -> None:
    """Both multi-device layouts: plain jit vs exported vs loaded, as max |diff| lines."""
    import jax
    from jax.sharding import Mesh

    from tarka_jax import Embedder

    assert jax.local_device_count() == 4, jax.devices()
    mesh = Mesh(np.asarray(jax.local_devices(), dtype=object).reshape(2, 2), ("data", "fsdp"))
    layouts = {"four": {}, "fsdp": {"mesh": mesh}}
    report = {}
    for name, kwargs in layouts.items():
        program_cache.disable()
        ref = Embedder.from_pretrained(model_path, **kwargs).encode(TEXTS, batch_size=6)
        caches, diffs = [], []
        for _ in range(2):  # export, then load
            caches.append(program_cache.enable(directory))
            got = Embedder.from_pretrained(model_path, **kwargs).encode(TEXTS, batch_size=6)
            diffs.append(float(np.abs(got - ref).max()))
        report[name] = {"diffs": diffs, "stats": [dict(c.stats) for c in caches]}
    print(json.dumps(report))


def test_multi_device_layouts_export_and_load(jax_only_model, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, jax_only_model, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, r in report.items():
        assert max(r["diffs"]) <= TOL, (name, r)
        exported, loaded = r["stats"]
        assert exported.get("exported", 0) >= 1 and loaded.get("loaded") == exported["exported"]
        assert not loaded.get("exported"), (name, r)


if __name__ == "__main__":
    _four_device_worker(sys.argv[1], sys.argv[2])

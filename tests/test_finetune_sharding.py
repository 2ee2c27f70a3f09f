"""The contrastive step over 8 host devices equals one device: negatives span every chip.

Runs in a subprocess: ``--xla_force_host_platform_device_count=8`` must be set
before jax starts. A loss computed per device (each anchor ranked only against
its own chip's candidates) would differ from the 1-device loss by far more than
the tolerance: with 2 rows per chip the per-chip loss is ~log 2, the global one
~log 16. Tolerance: losses and params within 1e-5 relative of the 1-device run
after the steps (only the order of float32 reductions differs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

LAYOUTS = [  # (data, fsdp, mini_batch_size); cached alone: test_finetune_loss.py
    # Pure data parallel (negatives from all 8 chips), then data x FSDP with cached
    # mini-batches: each axis and the cache are met; every layout costs one compile
    # (~35 CPU-s), so the five layouts this test had are three.
    (1, 1, 0), (8, 1, 0), (2, 4, 8),
]
STEPS = 2


def _worker(out_dir: str) -> None:
    import jax

    from tarka_jax.finetune.loss import ContrastiveLossConfig
    from tarka_jax.finetune.step import FinetuneStepConfig, make_finetune_step
    from tarka_jax.nn.config import DenseSpec, ModelConfig
    from tarka_jax.nn.encoder import init_params
    from tarka_jax.nn.sharding_rules import path_str
    from tarka_jax.train import sharding as shd
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer
    from tarka_jax.train.state import create_state

    assert jax.device_count() == 8, jax.devices()
    config = ModelConfig(vocab_size=211, hidden_size=48, intermediate_size=56, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8, query_pre_attn_scalar=8,
                         layer_types=("sliding_attention", "full_attention"), sliding_window=8,
                         dense=(DenseSpec(48, 24),))
    params = jax.device_get(init_params(config, jax.random.key(0)))
    rng = np.random.default_rng(0)
    # RMSNorm weights start at 0 (HF's init): a param that is only its own ~lr-sized Adam
    # update makes a relative check measure reduction-order noise against ~lr (measured
    # 1.2e-5 on a norm weight). O(1) random norm weights, as the parity tests use, compare
    # the noise with the parameter itself.
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: (rng.standard_normal(x.shape).astype(np.float32) * 0.5
                         if "norm" in jax.tree_util.keystr(path) else x), params)

    def tokens(b=16, t=24):
        lengths = rng.integers(3, t + 1, size=b)
        seg = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
        ids = np.where(seg > 0, rng.integers(3, 211, size=(b, t)), 0).astype(np.int32)
        pos = np.where(seg > 0, np.arange(t)[None], 0).astype(np.int32)
        return {"input_ids": ids, "segment_ids": seg, "positions": pos}

    batches = [[tokens(), tokens(), tokens()] for _ in range(STEPS)]
    results = {}
    for data, fsdp, mini in LAYOUTS:
        mesh = shd.make_mesh(data, fsdp, devices=jax.devices()[:data * fsdp])
        # Adam moves every element by ~lr whatever its gradient's size, so float32
        # reduction-order noise in tiny gradients becomes param noise ~lr: a moderate lr and
        # eps keep it under the 1e-5 tolerance (lr 1e-2 gave 1.5e-5 on one Dense kernel).
        tx, schedule = make_optimizer(OptimizerConfig(learning_rate=1e-3, eps=1e-6), STEPS)
        loss = ContrastiveLossConfig(matryoshka_dims=(24, 12), mini_batch_size=mini)
        state, state_sh = create_state(params, tx, mesh)
        step_fn = make_finetune_step(FinetuneStepConfig(model=config, loss=loss), tx, schedule,
                                     mesh, state_sh, num_columns=3)
        losses = []
        for batch in batches:
            batch = jax.device_put(batch, shd.batch_sharding(mesh))
            old = state
            state, metrics = step_fn(state, batch)
            assert all(x.is_deleted() for x in jax.tree.leaves(old)), "state was not donated"
            losses.append(float(metrics["loss"]))
        for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(state_sh)):
            assert got.sharding.is_equivalent_to(want, got.ndim), (got.sharding, want)
        key = f"{data}x{fsdp}_m{mini}"
        flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state["params"]))[0]
        np.savez(os.path.join(out_dir, key + ".npz"),
                 **{path_str(p): np.asarray(v) for p, v in flat})
        results[key] = {"losses": losses,
                        "devices": len(state["params"]["encoder"]["norm"]["weight"]
                                       .sharding.device_set)}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f)


@pytest.mark.slow  # ~25 s here alone (3 layouts compiled); leg 1 only
def test_finetune_sharded_meshes_match_one_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    ref, ref_params = results["1x1_m0"], dict(np.load(tmp_path / "1x1_m0.npz"))
    assert ref["losses"][0] > np.log(16) - 1.0  # the global batch: ~log 16 for random weights
    for data, fsdp, mini in LAYOUTS[1:]:
        key = f"{data}x{fsdp}_m{mini}"
        np.testing.assert_allclose(results[key]["losses"], ref["losses"], rtol=1e-5,
                                   err_msg=key)
        got = dict(np.load(tmp_path / f"{key}.npz"))
        for name, want in ref_params.items():
            rel = np.linalg.norm(got[name] - want) / np.linalg.norm(want)
            assert rel <= 1e-5, (key, name, rel)
        assert results[key]["devices"] == data * fsdp


if __name__ == "__main__":
    _worker(sys.argv[1])

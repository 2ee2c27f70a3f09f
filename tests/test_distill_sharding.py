"""Data-parallel and FSDP meshes over 8 host devices train exactly like one device.

Runs in a subprocess: ``--xla_force_host_platform_device_count=8`` must be set
before jax starts. Tolerance: losses and params within 1e-5
relative (tensor-wise) of the 1-device run after 3 steps -- only the order of float32
reductions differs between layouts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

LAYOUTS = [  # (data, fsdp, accumulation_steps)
    (1, 1, 1), (8, 1, 1), (1, 8, 1), (1, 1, 2), (2, 4, 2),
]
STEPS = 3


def _worker(out_path: str) -> None:
    import jax

    from tarka_jax.distill.loss import LossConfig
    from tarka_jax.distill.step import StepConfig, make_train_step
    from tarka_jax.nn.config import DenseSpec, ModelConfig
    from tarka_jax.nn.encoder import init_params
    from tarka_jax.nn.sharding_rules import path_str
    from tarka_jax.train import sharding as shd
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer
    from tarka_jax.train.state import create_state, shard_params

    assert jax.device_count() == 8, jax.devices()

    def model(vocab, hidden, layers, dense):
        widths = (hidden, *dense)
        return ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden + 8,
                           num_layers=layers, num_heads=4, num_kv_heads=2, head_dim=8,
                           query_pre_attn_scalar=8,
                           layer_types=("sliding_attention", "full_attention")[:layers],
                           sliding_window=8,
                           dense=tuple(DenseSpec(a, b) for a, b in zip(widths, widths[1:])))

    student_cfg, teacher_cfg = model(211, 48, 2, (40, 24)), model(199, 64, 2, (24,))
    student = jax.device_get(init_params(student_cfg, jax.random.key(0)))
    teacher = jax.device_get(init_params(teacher_cfg, jax.random.key(1)))
    rng = np.random.default_rng(0)

    def tokens(vocab, b=16, t=24):
        lengths = rng.integers(3, t + 1, size=b)
        seg = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
        ids = np.where(seg > 0, rng.integers(1, vocab, size=(b, t)), 0).astype(np.int32)
        pos = np.where(seg > 0, np.arange(t)[None], 0).astype(np.int32)
        return {"input_ids": ids, "segment_ids": seg, "positions": pos}

    batches = [{"student": tokens(211), "teacher": tokens(199)} for _ in range(STEPS)]
    results = {}
    for data, fsdp, accum in LAYOUTS:
        mesh = shd.make_mesh(data, fsdp, devices=jax.devices()[:data * fsdp])
        tx, schedule = make_optimizer(OptimizerConfig(learning_rate=1e-2, warmup_steps=2,
                                                      accumulation_steps=accum), STEPS)
        cfg = StepConfig(student=student_cfg, teacher=teacher_cfg,
                         loss=LossConfig(mse=0.5, matryoshka_dims=(24, 12)),
                         accumulation_steps=accum)
        state, state_sh = create_state(student, tx, mesh)
        t_params, t_sh = shard_params(teacher, mesh)
        step_fn = make_train_step(cfg, tx, schedule, mesh, state_sh, t_sh)
        losses = []
        for batch in batches:
            batch = jax.device_put(batch, shd.batch_sharding(mesh))
            old = state
            state, metrics = step_fn(state, t_params, batch)
            assert all(x.is_deleted() for x in jax.tree.leaves(old)), "state was not donated"
            losses.append(float(metrics["loss"]))
        # Output shardings are the ones asked for.
        for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(state_sh)):
            assert got.sharding.is_equivalent_to(want, got.ndim), (got.sharding, want)
        for v in metrics.values():
            assert v.sharding.is_fully_replicated
        specs = {path_str(p): [a if a is None or isinstance(a, str) else list(a)
                                   for a in s.spec] for p, s in
                 jax.tree_util.tree_flatten_with_path(state_sh["params"])[0]}
        key = f"{data}x{fsdp}/a{accum}"
        np.savez(os.path.join(os.path.dirname(out_path), key.replace("/", "_") + ".npz"),
                 **{k: np.asarray(v) for k, v in zip(
                     specs, jax.tree.leaves(jax.device_get(state["params"])))})
        results[key] = {"losses": losses, "specs": specs,
                        "replicated": all(x.sharding.is_fully_replicated
                                          for x in jax.tree.leaves(state["params"])),
                        "devices": len(state["params"]["encoder"]["norm"]["weight"]
                                       .sharding.device_set)}
    with open(out_path, "w") as f:
        json.dump(results, f)


@pytest.mark.slow  # runs in leg 1 only (CI time budget)
def test_distill_sharded_meshes_match_one_device(tmp_path):
    out = tmp_path / "results.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())

    def params(key):
        return dict(np.load(tmp_path / (key.replace("/", "_") + ".npz")))

    for accum in (1, 2):
        ref_key = f"1x1/a{accum}"
        ref, ref_params = results[ref_key], params(ref_key)
        for data, fsdp, a in LAYOUTS:
            key = f"{data}x{fsdp}/a{a}"
            if a != accum or key == ref_key:
                continue
            np.testing.assert_allclose(results[key]["losses"], ref["losses"], rtol=1e-5)
            got = params(key)
            for name, want in ref_params.items():
                rel = np.linalg.norm(got[name] - want) / np.linalg.norm(want)
                assert rel <= 1e-5, (key, name, rel)
            assert results[key]["devices"] == data * fsdp
    # Accumulation changes the loss (KL sees micro-batches) but must still train.
    assert results["1x1/a2"]["losses"] != results["1x1/a1"]["losses"]
    # Every param matched a rule; FSDP shards the embed axis of matrices, norms replicate.
    fsdp = results["1x8/a1"]["specs"]
    assert fsdp["encoder/layers_0/self_attn/q_proj/kernel"] == ["fsdp", None]
    assert fsdp["encoder/layers_0/mlp/down_proj/kernel"] == [None, "fsdp"]
    # The table splits by vocabulary rows; 211 rows do not divide by 8, so it replicates.
    assert fsdp["encoder/embed_tokens/embedding"] == [None, None]
    assert fsdp["dense_1/kernel"] == ["fsdp", None]
    assert fsdp["encoder/norm/weight"] == [None]
    assert results["8x1/a1"]["replicated"] and not results["1x8/a1"]["replicated"]


def test_distill_rules_cover_every_param():
    import jax

    from tarka_jax.nn import sharding_rules as rules
    from tarka_jax.nn.config import tarka_150m
    from tarka_jax.nn.encoder import init_params
    from tarka_jax.train import sharding as shd

    shapes = jax.eval_shape(lambda: init_params(tarka_150m(), jax.random.key(0)))
    mesh = shd.make_mesh(1, 1, devices=jax.devices()[:1])
    specs = rules.param_specs(shapes, mesh)  # raises on a param no rule matches
    assert len(jax.tree.leaves(specs, is_leaf=lambda x: isinstance(
        x, jax.sharding.PartitionSpec))) == len(jax.tree.leaves(shapes))
    try:
        rules.logical_axes("encoder/new_thing/kernel", 2)
    except rules.ShardingError as e:
        assert "new_thing" in str(e)
    else:
        raise AssertionError("an unmatched param must raise")


if __name__ == "__main__":
    _worker(sys.argv[1])

"""On a mesh the activations split by batch: no chip ever holds the whole batch.

The params follow the FSDP rules (tarka_jax.nn.sharding_rules), the batch splits over every
chip. XLA's partitioner propagates layouts from both: with the embedding table split on its
hidden dim, the lookup came out hidden-sharded and every layer then ran on the *whole* global
batch at 1/8 of the hidden size (found in a v5e distillation step: 8x the activation memory
and full-batch all-reduces of the MLP partial sums). This compiles a tiny model's forward and
gradient for 8 CPU devices and reads the partitioned program: every activation must have the
per-device batch. Runs in a subprocess (the device count is fixed when jax starts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

BATCH, LENGTH, DEVICES = 40, 24, 8  # sizes that no weight shape shares


def _worker() -> None:
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from tarka_jax.nn.config import DenseSpec, ModelConfig
    from tarka_jax.nn.encoder import embed, init_params
    from tarka_jax.nn.sharding_rules import RULES, param_shardings

    config = ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=96, num_layers=2,
                         num_heads=4, num_kv_heads=1, head_dim=16, query_pre_attn_scalar=16,
                         layer_types=("sliding_attention", "full_attention"), sliding_window=8,
                         dense=(DenseSpec(64, 32),))
    params = jax.device_get(init_params(config, jax.random.key(0)))
    mesh = Mesh(np.array(jax.devices()).reshape(1, DEVICES), ("data", "fsdp"))
    shardings = param_shardings(params, mesh)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            params, shardings)
    rows = NamedSharding(mesh, P(RULES["batch"], None))
    batch = {k: jax.ShapeDtypeStruct((BATCH, LENGTH), np.int32, sharding=rows)
             for k in ("input_ids", "segment_ids", "positions")}
    forward = lambda p, b: embed(p, b, config, attention="xla")
    programs = {"forward": forward, "gradient": jax.grad(lambda p, b: forward(p, b).sum())}
    out = {}
    for name, fn in programs.items():
        text = jax.jit(fn).lower(abstract, batch).compile().as_text()
        out[name] = {"whole_batch": len(re.findall(rf"\[{BATCH},{LENGTH},\d+", text)),
                     "per_device": len(re.findall(rf"\[{BATCH // DEVICES},{LENGTH},\d+", text))}
    print(json.dumps(out))


def test_activations_keep_the_per_device_batch():
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, seen in counts.items():
        assert seen["whole_batch"] == 0 and seen["per_device"] > 0, (name, seen)


if __name__ == "__main__":
    _worker()

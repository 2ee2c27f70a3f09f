"""The data-parallel Embedder (tarka_jax.inference.placement): 4 host devices encode like one device.

The 4-device checks run in one subprocess (``--xla_force_host_platform_device_count=4``
must be set before jax starts) on the torch-free random checkpoint; the worker saves
every output and the parent compares. Only the float32 reduction order differs
between layouts (other row counts per device, fsdp's gathered or partial-sum
matmuls). Tolerances: 1e-6 absolute on the unit-norm sentence embeddings (measured
<= 3.3e-7 on 2026-12-01); 3e-6 of the tensor's scale on the unnormalised O(3) token
embeddings (:func:`tarka_jax.testing.reference.scale_relative_error`, measured <= 9.6e-7).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tarka_jax.testing.reference import scale_relative_error

TOL = 1e-6
TOKEN_TOL = 3e-6
LAYOUTS = ("four", "fsdp")  # the default (every local device) and a 2 x 2 data x fsdp mesh


def _texts() -> list[str]:
    from tarka_jax.testing.reference import SAMPLE_TEXTS, long_text

    # An odd count (13): the 4-device passes pad their rows to a multiple of 4. Lengths
    # 2..16 tokens (one sorted row length, one packed width: few programs to compile).
    return ["", "x", SAMPLE_TEXTS[0]] + [long_text(1 + i % 4, seed=i) for i in range(10)]


def _worker(model_path: str, out_dir: str) -> None:
    import jax
    from jax.sharding import Mesh

    from tarka_jax import Embedder

    assert jax.local_device_count() == 4, jax.devices()
    devs = jax.local_devices()
    models = {"one": Embedder.from_pretrained(model_path, device=devs[0]),
              "four": Embedder.from_pretrained(model_path),
              "fsdp": Embedder.from_pretrained(
                  model_path, mesh=Mesh(np.asarray(devs, dtype=object).reshape(2, 2),
                                        ("data", "fsdp")))}
    texts, out, meta = _texts(), {}, {}
    for name, m in models.items():
        out[f"{name}/packed"] = m.encode(texts, batch_size=6)
        out[f"{name}/small"] = m.encode(texts, batch_size=6, truncate_dim=16,
                                        normalize_embeddings=True)  # the same programs
        if name != "fsdp":  # fsdp: packed only, the other paths place batches alike (time)
            out[f"{name}/sorted"] = m.encode(texts, batch_size=6, pack=False)
            for i, x in enumerate(m.encode(texts[:5], output_value="token_embeddings")):
                out[f"{name}/tokens{i}"] = x
        tensor = m.encode(texts, convert_to_tensor=True)
        q_proj = m.params["encoder"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
        batch = m.placement.put_batch(m.tokenizer.pad(m.tokenizer.encode(texts[:8])))
        meta[name] = {
            "shapes": sorted(m.compiled_shapes), "rows": m._devices,
            "tensor_devices": len(tensor.sharding.device_set),
            "tensor_replicated": tensor.sharding.is_fully_replicated,
            "q_proj_spec": [a if a is None or isinstance(a, str) else list(a)
                            for a in q_proj.sharding.spec] if name != "one" else None,
            "batch_shard_rows": batch["input_ids"].addressable_shards[0].data.shape[0],
        }
    # encode(device=...) is the model's own devices, or refused.
    try:
        models["four"].encode(texts, device=devs[0])
        meta["device_check"] = "accepted"
    except ValueError as e:
        meta["device_check"] = str(e)
    models["four"].encode(texts[:1], device=list(reversed(devs)))  # the same set: accepted
    with jax.default_device(devs[2]):  # honoured by the default placement
        meta["default_device"] = str(Embedder.from_pretrained(model_path).device)
    meta["devs2"] = str(devs[2])
    np.savez(os.path.join(out_dir, "out.npz"), **out)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f)


@pytest.fixture(scope="module")
def four_devices(jax_only_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("devices")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, jax_only_model, str(out)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(np.load(out / "out.npz")), json.loads((out / "meta.json").read_text())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sharded_embedder_equals_one_device(four_devices, layout):
    out, meta = four_devices
    keys = ("packed", "small") if layout == "fsdp" else ("packed", "sorted", "small")
    for key in keys:
        ref, got = out[f"one/{key}"], out[f"{layout}/{key}"]
        assert got.shape == ref.shape == (13, 16 if key == "small" else 24)
        if key == "small":  # truncated, then normalised
            np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
        assert np.abs(got - ref).max() <= TOL, (key, np.abs(got - ref).max())
    for i in range(5 if layout == "four" else 0):  # unnormalised [tokens_i, hidden]
        ref, got = out[f"one/tokens{i}"], out[f"{layout}/tokens{i}"]
        assert scale_relative_error(got, ref) <= TOKEN_TOL, i
    # Every pass the 4-device model compiled has a row count divisible by 4, and its
    # batches really are split (a quarter of the rows per device), not replicated.
    m = meta[layout]
    assert m["rows"] == 4 and m["shapes"] and all(r % 4 == 0 for r, _, _ in m["shapes"])
    assert any(r % 4 for r, _, _ in meta["one"]["shapes"])  # not so on one device
    assert m["batch_shard_rows"] == 2 and meta["one"]["batch_shard_rows"] == 8
    assert m["tensor_devices"] == 4 and m["tensor_replicated"]


def test_params_replicated_by_default_sharded_on_fsdp(four_devices):
    _, meta = four_devices
    assert meta["four"]["q_proj_spec"] == []  # P(): replicated
    assert meta["fsdp"]["q_proj_spec"] == ["fsdp", None]  # the rules table's embed axis
    assert "lives on 4 devices" in meta["device_check"]
    assert meta["default_device"] == meta["devs2"]


def test_placement_errors(jax_only_model):
    import jax
    from jax.sharding import Mesh

    from tarka_jax import Embedder
    from tarka_jax.inference.placement import Placement

    cpu = jax.devices("cpu")[0]
    with pytest.raises(ValueError, match="device= and devices= given"):
        Embedder.from_pretrained(jax_only_model, device="cpu", devices=[cpu])
    mesh = Mesh(np.asarray([cpu], dtype=object), ("data",))
    with pytest.raises(ValueError, match="devices= and mesh= given"):
        Placement.build(devices=[cpu], mesh=mesh)
    with pytest.raises(ValueError, match="names no device"):
        Placement.build(devices=[])
    with pytest.raises(ValueError, match="a device twice"):
        Placement.build(devices=[cpu, cpu])
    with pytest.raises(ValueError, match="'data' axis and optionally an 'fsdp'"):
        Placement.build(mesh=Mesh(np.asarray([cpu], dtype=object), ("model",)))
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        Placement.build(mesh=[cpu])
    one = Placement.build()  # this process has one CPU device: a 1-device "data" mesh
    assert one.devices == jax.local_devices() and one.rows == 1 and one.device == cpu


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])

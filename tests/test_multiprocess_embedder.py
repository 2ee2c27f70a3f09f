"""An Embedder on a mesh over two real processes (jax.distributed on 127.0.0.1, gloo CPU
collectives, 2 host devices each) encodes each process's own texts like one device.

Process 0 has 7 texts, process 1 has 3 of which two are long, so their local plans differ in
pass count, rows and widths (and the agreed schedule pads each); then process 1 encodes no
text at all while process 0 still has some. Each process also encodes the same texts on one
of its own devices (a one-device Embedder, no collective) and saves both; the parent
compares them. Only the float32 reduction order may differ: 1e-6 absolute on the unit-norm
embeddings, as tests/test_embedder_devices.py. Every process runs under a timeout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np

TOL = 1e-6
TIMEOUT = 240  # seconds, per process


def _texts(process: int) -> list[str]:
    from tarka_jax.testing.reference import SAMPLE_TEXTS, long_text

    if process == 0:
        return ["", "x", SAMPLE_TEXTS[0]] + [long_text(1 + i % 4, seed=i) for i in range(4)]
    return [long_text(30, seed=7), "short one", long_text(40, seed=8)]


def _worker(model_path: str, out_dir: str, port: str, process: int) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process)
    from tarka_jax import Embedder
    from tarka_jax.inference.placement import Placement

    assert jax.local_device_count() == 2 and jax.device_count() == 4, jax.devices()
    every = Embedder.from_pretrained(model_path, devices=jax.devices())  # spans processes
    one = Embedder.from_pretrained(model_path, device=jax.local_devices()[0])
    assert every.placement.spans_processes and every.placement.rows == 2
    texts, out = _texts(process), {}
    for key, kwargs in {"packed": {}, "sorted": {"pack": False},
                        "small": {"truncate_dim": 16, "normalize_embeddings": True}}.items():
        out[f"every/{key}"] = every.encode(texts, batch_size=4, **kwargs)
        out[f"one/{key}"] = one.encode(texts, batch_size=4, **kwargs)
    mine = texts[:5] if process == 0 else []  # one process without texts
    out["every/none"] = every.encode(mine, batch_size=4)
    out["one/none"] = one.encode(mine, batch_size=4) if mine else np.zeros((0, 24), np.float32)
    out["shapes"] = np.asarray(sorted(every.compiled_shapes))
    tensor = every.encode(texts, batch_size=4, convert_to_tensor=True)  # on its own devices
    assert tensor.sharding.device_set == set(jax.local_devices()), tensor.sharding
    out["every/tensor"] = np.asarray(tensor)
    for devices, match in ((jax.devices()[:3], "unequal device counts per process"),
                           ([d for d in jax.devices() if d.process_index != process],
                            f"but none of \\[{process}\\]")):
        try:
            Placement.build(devices=devices)
            raise AssertionError(f"accepted {devices}")
        except ValueError as e:
            assert re.search(match, str(e)), e
    try:
        every.encode(texts, output_value="token_embeddings")
        out["tokens_refused"] = np.asarray("")
    except ValueError as e:
        out["tokens_refused"] = np.asarray(str(e))
    np.savez(os.path.join(out_dir, f"out{process}.npz"), **out)


def test_two_processes_each_get_their_own_embeddings(jax_only_model, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    from tarka_jax.testing.reference import communicate_all, free_port

    port = str(free_port())  # for process 0's coordinator
    procs = [subprocess.Popen([sys.executable, __file__, jax_only_model, str(tmp_path), port,
                               str(i)], env=env, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    errors = [err for _, err in communicate_all(procs, TIMEOUT)]
    assert [p.returncode for p in procs] == [0, 0], [e[-3000:] for e in errors]
    out = [dict(np.load(tmp_path / f"out{i}.npz")) for i in range(2)]
    for i, got in enumerate(out):
        n = len(_texts(i))
        for key in ("packed", "sorted", "small", "none"):
            ref, mine = got[f"one/{key}"], got[f"every/{key}"]
            rows = n if key != "none" else (5 if i == 0 else 0)
            assert mine.shape == ref.shape == (rows, 16 if key == "small" else 24), key
            assert np.abs(mine - ref).max(initial=0) <= TOL, (i, key, np.abs(mine - ref).max())
        assert np.abs(got["every/tensor"] - got["one/packed"]).max() <= TOL
        assert "token_embeddings" in str(got["tokens_refused"]), got["tokens_refused"]
        assert "spans processes" in str(got["tokens_refused"])
    # Both processes ran the very same shapes (the agreed schedule), each its 2-device share.
    assert (out[0]["shapes"] == out[1]["shapes"]).all()
    assert all(r % 2 == 0 for r, _, _ in out[0]["shapes"])
    # the texts differ, so the two processes' encodings differ (each got its own back)
    assert out[0]["every/packed"].shape != out[1]["every/packed"].shape


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))

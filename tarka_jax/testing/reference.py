"""Random-weight reference checkpoints built with the real PyTorch stack.

Tests (and anyone checking a port) call :func:`build_reference_model` to get a
sentence-transformers folder made by transformers + sentence-transformers
themselves: a ``Gemma3TextModel(use_bidirectional_attention=True)`` with
random weights (RMSNorm weights randomised too: HF initialises them to 0, which
would let a port that forgets ``(1 + w)`` pass), a word-piece tokenizer trained
here, Pooling, Dense layers and Normalize. torch, transformers and
sentence-transformers are imported lazily: this module is importable without them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

from tarka_jax.convert.st_folder import ST_TYPES
from tarka_jax.nn.config import layer_types_pattern
from tarka_jax.testing.wordpiece import (  # noqa: F401
    SAMPLE_TEXTS,
    long_text,
    train_tokenizer,
    write_tokenizer_config,
)
from tarka_jax.text.prompts import TASK_PROMPTS

# Prompts as EmbeddingGemma ships them (docs/numerics.md); one table for the package.
GEMMA_PROMPTS = TASK_PROMPTS

@dataclasses.dataclass(frozen=True)
class TinySpec:
    """Shape of a reference checkpoint. Default sizes are distinct so a swapped axis shows."""

    vocab_size: int = 211
    hidden_size: int = 48
    intermediate_size: int = 56
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 12
    query_pre_attn_scalar: int = 10
    sliding_window: int = 8  # serialised; inclusive radius 4, so test texts exceed it
    layer_types: Sequence[str] | None = None  # None: (sliding, ..., full) pattern of 3
    dense: Sequence[int] = (40, 24)  # output sizes of the Dense modules
    max_seq_length: int = 64
    max_position_embeddings: int = 2048
    prompts: dict | None = None  # None: GEMMA_PROMPTS
    default_prompt_name: str | None = None
    legacy_module_types: bool = False  # write sentence_transformers.models.* type strings
    model_prefix: bool = False  # store backbone keys as "model.*"
    # add_bos_token / add_eos_token written into the tokenizer_config.json used to build the
    # model. Note: transformers 5.x drops these flags when a tokenizer.json exists (and on save),
    # so the final folder does not carry them; tests that need them add them to a copy.
    tokenizer_add_flags: tuple[bool, bool] | None = None
    seed: int = 0


def _write_tokenizer_config(out_dir: str, spec: TinySpec) -> None:
    write_tokenizer_config(out_dir, spec.max_seq_length, spec.tokenizer_add_flags)


def _randomise(module, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            scale = 0.3 if name.endswith("norm.weight") else 0.08
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale)


def build_reference_model(out_dir: str, spec: TinySpec = TinySpec()):
    """Save a random-weight sentence-transformers folder; return the loaded SentenceTransformer.

    The folder is written by sentence-transformers itself (modules.json, Pooling,
    Dense, Normalize, prompts), then optionally rewritten to the legacy Hub
    layout (old module type strings, ``model.``-prefixed backbone keys).
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import Gemma3TextConfig, Gemma3TextModel

    torch.manual_seed(spec.seed)
    os.makedirs(out_dir, exist_ok=True)
    tok_dir = os.path.join(out_dir, "_tok")
    train_tokenizer(spec.vocab_size, tok_dir)
    _write_tokenizer_config(tok_dir, spec)
    layer_types = list(spec.layer_types or layer_types_pattern(spec.num_layers, 3))
    config = Gemma3TextConfig(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim, query_pre_attn_scalar=spec.query_pre_attn_scalar,
        sliding_window=spec.sliding_window, layer_types=layer_types,
        max_position_embeddings=spec.max_position_embeddings,
        use_bidirectional_attention=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        },
    )
    backbone = Gemma3TextModel(config).eval()
    _randomise(backbone, spec.seed)
    hf_dir = os.path.join(out_dir, "_hf")
    backbone.save_pretrained(hf_dir)
    for name in os.listdir(tok_dir):
        os.replace(os.path.join(tok_dir, name), os.path.join(hf_dir, name))
    os.rmdir(tok_dir)

    transformer = Transformer(hf_dir, max_seq_length=spec.max_seq_length)
    modules = [transformer, Pooling(spec.hidden_size, pooling_mode="mean")]
    width = spec.hidden_size
    gen = torch.Generator().manual_seed(spec.seed + 1)
    for out in spec.dense:
        dense = Dense(width, out, bias=False, activation_function=torch.nn.Identity())
        with torch.no_grad():
            dense.linear.weight.copy_(torch.randn(out, width, generator=gen) * width ** -0.5)
        modules.append(dense)
        width = out
    modules.append(Normalize())
    prompts = GEMMA_PROMPTS if spec.prompts is None else spec.prompts
    model = SentenceTransformer(modules=modules, prompts=prompts,
                                default_prompt_name=spec.default_prompt_name, device="cpu")
    model.save(out_dir)
    _remove_tree(hf_dir)
    if spec.model_prefix:
        _prefix_backbone_keys(out_dir)
    if spec.legacy_module_types:
        _legacy_module_types(out_dir)
    return SentenceTransformer(out_dir, device="cpu")


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _prefix_backbone_keys(folder: str) -> None:
    from safetensors.numpy import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    save_file({f"model.{k}": v for k, v in tensors.items()}, path, metadata={"format": "pt"})


def _legacy_module_types(folder: str) -> None:
    path = os.path.join(folder, "modules.json")
    with open(path) as f:
        modules = json.load(f)
    for m in modules:
        m["type"] = ST_TYPES[m["type"].rsplit(".", 1)[-1]]
    with open(path, "w") as f:
        json.dump(modules, f, indent=2)



# ---- tolerances ------------------------------------------------------------------------------


def cli_killed_when_replacing(suffix: str) -> str:
    """``python -c`` code that runs the ``tarka-jax`` CLI (its arguments follow) and SIGKILLs
    its own process the moment an ``os.replace`` targets a path ending in ``suffix``: a kill
    mid-write that no cleanup of the job's own can catch."""
    return (
        "import os, signal, sys\n"
        "real = os.replace\n"
        "def replace(src, dst, *a, **k):\n"
        f"    if os.fspath(dst).endswith({suffix!r}):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(src, dst, *a, **k)\n"
        "os.replace = replace\n"
        "from tarka_jax.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a test's ``jax.distributed`` coordinator)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_processes(argv: list[str], processes: int = 1, devices: int = 1,
                     cwd: str | None = None) -> list:
    """``python -m tarka_jax ARGV`` as ``processes`` processes of ``devices`` CPU devices
    each, joined by ``jax.distributed`` on 127.0.0.1 when several; pipes for both streams
    (drain them with :func:`communicate_all`)."""
    import subprocess
    import sys

    port, procs = free_port(), []
    for i in range(processes):
        env = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        if processes > 1:
            env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                       JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i))
        procs.append(subprocess.Popen([sys.executable, "-m", "tarka_jax", *argv], env=env,
                                      cwd=cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def communicate_all(procs, timeout: float) -> list[tuple[str | None, str | None]]:
    """``(stdout, stderr)`` of every process, all pipes drained at once (one thread each).

    Reading one process to its end while another's pipe fills would block that one
    in a write: a multi-process job then hangs in its next collective until the
    coordination service aborts it. On any error (a timeout) every process still
    running is killed and reaped before the error propagates.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(len(procs), 1)) as pool:
        futures = [pool.submit(p.communicate, timeout=timeout) for p in procs]
        try:
            return [f.result() for f in futures]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait()


def scale_relative_error(ours, ref) -> float:
    """``max |ours - ref| / max |ref|``: the error relative to the tensor's own scale.

    The tolerance for unnormalised tensors (hidden states, logits, gradients).
    float32 rounding error grows with the magnitude of the values that are
    summed, so an absolute bound that holds for unit-norm embeddings is a few
    ulps too tight for O(1)-O(10) hidden states (a CI run failed at 1.007e-5 >
    1e-5 with max |ref| ~ 5). Element-wise relative error is meaningless near
    zero, so the scale is the largest magnitude in the reference.
    """
    import numpy as np

    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"shapes differ: {ours.shape} vs {ref.shape}")
    return float(np.max(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def docstring_sts_rows(pairs: list[dict]) -> list[dict]:
    """STS rows ``{"sentence1", "sentence2", "score"}`` from docstring pairs (held-out
    evaluator tests): a summary with its own body (gold 5), then with the next pair's body
    (2 when both come from the same module ``source``, else 0)."""
    rows = []
    for i, p in enumerate(pairs):
        other = pairs[(i + 1) % len(pairs)]
        rows.append({"sentence1": p["summary"], "sentence2": p["body"], "score": 5})
        rows.append({"sentence1": p["summary"], "sentence2": other["body"],
                     "score": 2 if other["source"] == p["source"] else 0})
    return rows

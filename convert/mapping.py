"""The one key table between Flax params and Hugging Face / sentence-transformers tensors.

Every transpose of the project lives here: Flax kernels are ``[in, out]``,
torch ``Linear.weight`` is ``[out, in]``.

HF names (torch layout)                       Flax path
``embed_tokens.weight``            [V, E]     ``encoder/embed_tokens/embedding``
``layers.{i}.self_attn.q_proj.weight`` [o, i] ``encoder/layers_{i}/self_attn/q_proj/kernel`` (T)
``layers.{i}.*norm.weight``        [E]/[D]    ``encoder/layers_{i}/.../weight``
``norm.weight``                    [E]        ``encoder/norm/weight``
``dense_{k}.linear.weight``        [o, i]     ``dense_{k}/kernel`` (T)  (the k-th ST Dense module)
``dense_{k}.linear.bias``          [o]        ``dense_{k}/bias``
"""

from __future__ import annotations

import re

import jax
import numpy as np

from tarka_jax.errors import TarkaError
from tarka_jax.nn.config import ModelConfig


class CheckpointMismatch(TarkaError):
    """A checkpoint's tensors do not match the model: missing, unexpected or mis-shaped."""


_LAYER = re.compile(r"^layers_(\d+)$")
TRANSPOSE_ROWS = 64  # rows of the source per copied band: 64 x 768 float32 stays in L2


def transpose(matrix: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``matrix.T`` for a 2-D kernel ([out, in] <-> [in, out]).

    Copied in bands of 64 source rows: ``np.ascontiguousarray(matrix.T)`` walks the
    source a column at a time, which streams every cache line once per element here
    (1.1 GB/s on the dev CPU); a band's transpose stays in cache (3.1 GB/s). At full
    size that is ~0.35 s less of every model load (BENCHMARKS.md, first embedding).
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        return np.ascontiguousarray(matrix.T)
    rows = matrix.shape[0]
    out = np.empty(matrix.shape[::-1], matrix.dtype)
    for start in range(0, rows, TRANSPOSE_ROWS):
        out[:, start:start + TRANSPOSE_ROWS] = matrix[start:start + TRANSPOSE_ROWS].T
    return out


def flax_path_to_hf(path: tuple[str, ...]) -> tuple[str, bool]:
    """('encoder', 'layers_3', 'mlp', 'up_proj', 'kernel') -> ('layers.3.mlp.up_proj.weight', True).

    Returns the HF key and whether the tensor is transposed between the two.
    """
    parts = list(path)
    leaf = parts.pop()
    if parts and parts[0] == "encoder":
        parts = parts[1:]
        parts = [f"layers.{m.group(1)}" if (m := _LAYER.match(p)) else p for p in parts]
    elif parts and parts[0].startswith("dense_"):
        parts = [parts[0], "linear"]
    else:
        raise CheckpointMismatch(f"parameter {'/'.join(path)} has no checkpoint name")
    transposed = leaf == "kernel"
    name = {"kernel": "weight", "embedding": "weight"}.get(leaf, leaf)
    return ".".join(parts + [name]), transposed


def expected_shapes(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax path -> shape for a config, written out from the model docstring's param tree.

    Written out rather than traced: tracing the model's init (even one layer of it) cost
    0.3-0.7 s of every model load here, the first trace of the process.
    ``tests/test_config.py`` checks this table equals the traced init of whole models.
    """
    e, d, f = config.hidden_size, config.head_dim, config.intermediate_size
    layer = {("self_attn", "q_proj", "kernel"): (e, config.num_heads * d),
             ("self_attn", "k_proj", "kernel"): (e, config.num_kv_heads * d),
             ("self_attn", "v_proj", "kernel"): (e, config.num_kv_heads * d),
             ("self_attn", "o_proj", "kernel"): (config.num_heads * d, e),
             ("self_attn", "q_norm", "weight"): (d,), ("self_attn", "k_norm", "weight"): (d,),
             ("mlp", "gate_proj", "kernel"): (e, f), ("mlp", "up_proj", "kernel"): (e, f),
             ("mlp", "down_proj", "kernel"): (f, e)}
    layer.update({(norm, "weight"): (e,) for norm in (
        "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
        "post_feedforward_layernorm")})
    shapes = {("encoder", "embed_tokens", "embedding"): (config.vocab_size, e),
              ("encoder", "norm", "weight"): (e,)}
    for i in range(config.num_layers):
        shapes.update({("encoder", f"layers_{i}") + path: shape for path, shape in layer.items()})
    for k, spec in enumerate(config.dense):
        shapes[(f"dense_{k}", "kernel")] = (spec.in_features, spec.out_features)
        if spec.bias:
            shapes[(f"dense_{k}", "bias")] = (spec.out_features,)
    return shapes


def check_params(params, config: ModelConfig, *, source: str = "Flax params") -> dict:
    """Check a Flax param tree against the config's tree; returns ``{path tuple: array}``.

    Strict: a missing, unexpected or mis-shaped parameter is a CheckpointMismatch naming it.
    """
    shapes = expected_shapes(config)
    flat = {tuple(k.key for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    _check_key_sets(set(flat), set(shapes), "/".join, source)
    for path, value in flat.items():
        if tuple(np.shape(value)) != shapes[path]:
            raise CheckpointMismatch(
                f"{source}: parameter {'/'.join(path)} has shape {tuple(np.shape(value))}, "
                f"expected {shapes[path]}")
    return flat


def params_to_hf(params, config: ModelConfig) -> dict[str, np.ndarray]:
    """Flax param tree -> {HF key: array in torch layout}, strictly checked against the config."""
    out = {}
    for path, value in check_params(params, config).items():
        value = np.asarray(value)
        key, transposed = flax_path_to_hf(path)
        out[key] = transpose(value) if transposed else value
    return out


def hf_to_params(tensors: dict, config: ModelConfig, *, source: str = "checkpoint"):
    """{HF key: torch-layout array} -> Flax param tree. Strict: every tensor used, every shape checked.

    A value is an array or a lazily read
    :class:`~tarka_jax.convert.safetensors_io.StoredTensor`, which is shape-checked
    before it is read, then read straight into its (transposed) destination.

    Raises:
      CheckpointMismatch naming each missing, unexpected or mis-shaped tensor.
    """
    shapes = expected_shapes(config)
    by_hf = {flax_path_to_hf(path): path for path in shapes}  # (key, transposed) -> path
    wanted = {key: (path, transposed) for (key, transposed), path in by_hf.items()}
    _check_key_sets(set(tensors), set(wanted), str, source)
    params: dict = {}
    for key, value in tensors.items():
        path, transposed = wanted[key]
        shape = shapes[path][::-1] if transposed else shapes[path]
        stored = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
        if stored != tuple(shape):
            raise CheckpointMismatch(
                f"{source}: tensor {key!r} has shape {stored}, the config expects {tuple(shape)}")
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if hasattr(value, "read"):  # a StoredTensor: read (and transposed) band by band
            node[path[-1]] = value.read(transpose=transposed)
        else:
            value = np.asarray(value)
            node[path[-1]] = transpose(value) if transposed else value
    return params


def _check_key_sets(have: set, want: set, show, source: str) -> None:
    missing = sorted(show(k) for k in want - have)
    unexpected = sorted(show(k) for k in have - want)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {_preview(unexpected)}")
        raise CheckpointMismatch(f"{source} does not match the model config: " + "; ".join(parts))


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")

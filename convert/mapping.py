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

import dataclasses
import re

import jax
import numpy as np

from tarka_jax.errors import TarkaError
from tarka_jax.nn.config import ModelConfig


class CheckpointMismatch(TarkaError):
    """A checkpoint's tensors do not match the model: missing, unexpected or mis-shaped."""


_LAYER = re.compile(r"^layers_(\d+)$")
_TRANSPOSE_ROWS = 64  # rows of the source per copied band: 64 x 768 float32 stays in L2


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
    for start in range(0, rows, _TRANSPOSE_ROWS):
        out[:, start:start + _TRANSPOSE_ROWS] = matrix[start:start + _TRANSPOSE_ROWS].T
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
    """Flax path -> shape for a config, without allocating or computing anything.

    Every decoder layer has the same parameters (sliding and full layers differ only
    in their mask and RoPE), so the shapes come from tracing the model's init with
    *one* layer and repeating ``layers_0`` for each layer: tracing all 24 layers cost
    1.5-3 s of every model load here (tests/test_convert.py checks the two agree).
    """
    from tarka_jax.nn.encoder import init_params  # lazy: model imports are heavier

    one_layer = dataclasses.replace(config, num_layers=1, layer_types=config.layer_types[:1])
    tree = jax.eval_shape(lambda: init_params(one_layer, jax.random.key(0)))
    shapes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = tuple(k.key for k in path)
        if keys[:2] == ("encoder", "layers_0"):
            for i in range(config.num_layers):
                shapes[("encoder", f"layers_{i}") + keys[2:]] = tuple(leaf.shape)
        else:
            shapes[keys] = tuple(leaf.shape)
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

    A value may be anything ``np.asarray`` reads, e.g. a lazily read
    :class:`~tarka_jax.convert.safetensors_io.StoredTensor`: tensors are read one at a
    time, so a source copy is dropped right after its transpose.

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
        value = np.asarray(value)
        shape = shapes[path][::-1] if transposed else shapes[path]
        if value.shape != tuple(shape):
            raise CheckpointMismatch(
                f"{source}: tensor {key!r} has shape {tuple(value.shape)}, the config expects "
                f"{tuple(shape)}")
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
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

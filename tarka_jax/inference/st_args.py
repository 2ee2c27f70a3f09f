"""Arguments that sentence-transformers code passes, mapped onto tarka-jax (or refused clearly).

Why a module: :class:`~tarka_jax.Embedder` and :class:`~tarka_jax.SentenceTransformer`
accept the same keywords, and each must be either honoured or refused / ignored
with a message that says so — never a crash deep inside the loader.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import numpy as np

from tarka_jax.errors import InputTypeError, UsageError

_DEVICE = re.compile(r"^(cpu|cuda|gpu|tpu|mps|xpu|npu)(?::(\d+))?$")
_PLATFORM = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "tpu": "tpu"}


def check_int(name: str, value: Any, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an int in ``lo..hi``; Python and numpy integers alike, never bool or float.

    Raises:
      ValueError: naming the argument, its allowed range and the value given.
    """
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or value < lo or (hi is not None and value > hi):
        span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise UsageError(f"{name} must be an int in {span}, got {value!r}")
    return int(value)


def check_max_seq_length(value: Any, max_position_embeddings: int | None) -> int | None:
    """None, or an int in 1..max_position_embeddings (the model has no positions beyond)."""
    if value is None:
        return None
    return check_int("max_seq_length", value, 1, max_position_embeddings)


def resolve_device(device: Any):
    """ST's ``device`` ("cpu", "cuda", "cuda:1", a torch/jax device, or a list) -> jax devices.

    Returns a list of ``jax.Device`` (None for None: jax's default placement).

    Raises:
      ValueError: an unknown device string, or a platform / index jax does not have.
    """
    import jax

    if device is None:
        return None
    if isinstance(device, (list, tuple)):
        if not device:
            raise UsageError("device=[] names no device")
        return [d for item in device for d in resolve_device(item)]
    if isinstance(device, jax.Device):
        return [device]
    text = str(device).strip().lower()  # torch.device("cuda:1") prints as cuda:1
    match = _DEVICE.match(text)
    if not match:
        raise UsageError(f"device {device!r} is not a device name; use 'cpu', 'cuda', "
                         "'cuda:N', 'tpu' or a jax.Device")
    kind, index = match.group(1), match.group(2)
    platform = _PLATFORM.get(kind)
    if platform is None:
        raise UsageError(f"device {device!r}: jax has no {kind} backend; use 'cpu', 'cuda' or "
                         "'tpu'")
    try:
        found = jax.devices(platform)
    except RuntimeError:
        have = sorted({d.platform for d in jax.devices()})
        raise UsageError(f"device {device!r}: this jax install has no {platform} devices "
                         f"(it has: {', '.join(have)})") from None
    i = int(index or 0)
    if i >= len(found):
        raise UsageError(f"device {device!r}: only {len(found)} {platform} device(s) "
                         f"(indices 0..{len(found) - 1})")
    return [found[i]]


def single_device(device: Any):
    """The one jax device ``device`` names (None = default); several are refused clearly."""
    devices = resolve_device(device)
    if devices is None:
        return None
    if len(devices) > 1:
        raise UsageError(f"device={device!r} names {len(devices)} devices; device= is one "
                         "device: pass several as devices=[...] (docs/devices.md)")
    return devices[0]


_MODEL_KWARG_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "torch.float32": "float32",
                       "torch.bfloat16": "bfloat16", "auto": None}


def model_kwargs_dtype(model_kwargs: dict | None) -> str | None:
    """The compute dtype ST's ``model_kwargs`` ask for (``torch_dtype`` / ``dtype``), if any.

    Other keys (``attn_implementation``, ``device_map``, ...) have no meaning here: a
    warning names them. ``"auto"`` keeps the default (float32).
    """
    if not model_kwargs:
        return None
    if not isinstance(model_kwargs, dict):
        raise InputTypeError(f"model_kwargs must be a dict, got {type(model_kwargs).__name__}")
    kwargs = dict(model_kwargs)
    dtype = None
    for key in ("torch_dtype", "dtype"):
        if key in kwargs:
            value = str(kwargs.pop(key))
            if value not in _MODEL_KWARG_DTYPES:
                raise UsageError(f"model_kwargs[{key!r}]={value!r}: tarka-jax computes in "
                                 "float32 or bfloat16")
            dtype = _MODEL_KWARG_DTYPES[value]
    if kwargs:
        warnings.warn(f"model_kwargs {sorted(kwargs)} ignored: they configure a transformers "
                      "model; tarka-jax's options are dtype= and attention=", stacklevel=3)
    return dtype


def ignored_st_options(*, trust_remote_code: bool = False, backend: str = "torch",
                       processor_kwargs: dict | None = None, config_kwargs: dict | None = None,
                       model_card_data: Any = None) -> None:
    """Warn about ST options that have no meaning here (they change nothing we compute)."""
    notes = []
    if trust_remote_code:
        notes.append("trust_remote_code=True (tarka-jax never runs code from a model folder)")
    if backend != "torch":
        notes.append(f"backend={backend!r} (tarka-jax always runs its own JAX model)")
    if processor_kwargs:
        notes.append(f"processor_kwargs {sorted(processor_kwargs)}")
    if config_kwargs:
        notes.append(f"config_kwargs {sorted(config_kwargs)}")
    if model_card_data is not None:
        notes.append("model_card_data")
    if notes:
        warnings.warn("ignored: " + "; ".join(notes), stacklevel=3)


def local_only_folder(path: str, *, revision: str | None, cache_dir: str | None) -> str:
    """``local_files_only=True``: a local folder as is, a hub id only from the local cache."""
    if os.path.isdir(os.path.expanduser(path)) or path.startswith("builtin:"):
        return path
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(path, revision=revision, cache_dir=cache_dir,
                                 local_files_only=True)
    except (OSError, ValueError) as e:  # huggingface_hub's not-in-cache errors are both
        raise FileNotFoundError(f"local_files_only=True: {path!r} is neither a local folder nor "
                                f"in the hub cache ({type(e).__name__})") from None


def refuse_run_folder(path: Any) -> None:
    """A distillation run folder is not a model: say how to get one from it."""
    if isinstance(path, (str, os.PathLike)):
        folder = os.path.expanduser(os.fspath(path))
        if os.path.isfile(os.path.join(folder, "run.json")) and not any(
                os.path.isfile(os.path.join(folder, n))
                for n in ("config.json", "tarka_jax_config.json")):
            raise UsageError(
                f"{folder} is a distillation run folder, not a model: export a step with "
                f"`python convert/flax_to_hf.py {folder} OUT --step N` (default: the latest) "
                "and load OUT")


__all__ = [
    "check_int",
    "check_max_seq_length",
    "ignored_st_options",
    "local_only_folder",
    "model_kwargs_dtype",
    "refuse_run_folder",
    "resolve_device",
    "single_device",
]


def check_truncate_dim(truncate_dim, dim: int) -> int | None:
    """None, or an int in 1..dim (numpy integers accepted); a clear error otherwise."""
    if truncate_dim is None:
        return None
    if (not isinstance(truncate_dim, (int, np.integer)) or isinstance(truncate_dim, bool)
            or not 0 < truncate_dim <= dim):
        raise UsageError(
            f"truncate_dim must be an int in 1..{dim} (the model's dimension), "
            f"got {truncate_dim!r}")
    return int(truncate_dim)


def check_encode_options(output_value, precision, pool, chunk_size) -> None:
    """``encode``'s sentence-transformers options we serve, or a clear refusal
    (``device`` is the model's placement's to check: ``Placement.check_encode_device``)."""
    from tarka_jax.inference.quantize import PRECISIONS

    if output_value not in ("sentence_embedding", "token_embeddings"):
        raise UsageError(f"output_value must be 'sentence_embedding' or 'token_embeddings', "
                         f"got {output_value!r}")
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if pool is not None or chunk_size is not None:
        raise UsageError("pool / chunk_size (multi-process encoding) are not supported: one "
                         "model encodes on its devices (devices= / mesh=, docs/devices.md); "
                         "batch_size sets the work per step")


def from_pretrained_options(path, *, dtype, device, revision, cache_dir, cache_folder, token,
                            use_auth_token, local_files_only, model_kwargs, **ignored):
    """sentence-transformers' constructor keywords -> ``(path, dtype, device, cache_dir,
    token)`` for ``Embedder.from_pretrained``; ``ignored`` options warn when set."""
    if cache_folder is not None and cache_dir is not None and cache_folder != cache_dir:
        raise UsageError("cache_folder and cache_dir are the same setting; pass one")
    cache_dir = cache_dir if cache_dir is not None else cache_folder
    token = token if token is not None else use_auth_token
    ignored_st_options(**ignored)
    kwargs_dtype = model_kwargs_dtype(model_kwargs)
    if kwargs_dtype is not None:
        if dtype not in ("float32", kwargs_dtype):
            raise UsageError(f"dtype={dtype!r} and model_kwargs' dtype {kwargs_dtype!r} "
                             "disagree; pass one")
        dtype = kwargs_dtype
    device = single_device(device)
    refuse_run_folder(path)
    if local_files_only:
        path = local_only_folder(path, revision=revision, cache_dir=cache_dir)
    return path, dtype, device, cache_dir, token

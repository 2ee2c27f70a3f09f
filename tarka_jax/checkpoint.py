"""Reading and writing checkpoint folders: sentence-transformers / HF, and our Flax format.

Two on-disk formats, one direction each (no layout sniffing beyond "which of
the two is this"):

* **HF / sentence-transformers folder** (what the Hub serves): ``config.json``,
  ``model.safetensors`` (or sharded with an index; keys with or without a
  ``model.`` prefix), ``modules.json`` with Pooling / Dense / Normalize modules,
  tokenizer files, ``config_sentence_transformers.json`` (prompts).
* **tarka-jax Flax folder** (what ``convert/hf_to_flax.py`` writes):
  ``flax_params.safetensors`` keyed by Flax paths (``encoder/layers_0/...``),
  ``tarka_jax_config.json``, and the same tokenizer and prompt files.

Loading is strict: a missing, unexpected or mis-shaped tensor is an error that
names it (see ``tarka_jax.convert.mapping``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Any

import numpy as np

from tarka_jax.config import ConfigError, DenseSpec, ModelConfig, backbone_from_hf, read_json
from tarka_jax.convert.mapping import CheckpointMismatch, hf_to_params, params_to_hf

FLAX_PARAMS_FILE = "flax_params.safetensors"
FLAX_CONFIG_FILE = "tarka_jax_config.json"
FLAX_FORMAT_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "tokenizer.model", "chat_template.jinja")
ST_CONFIG_FILE = "config_sentence_transformers.json"
ST_SEQ_FILE = "sentence_bert_config.json"
_HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*/*.json", "*/*.safetensors"]
# Models shipped with the package, addressed as "builtin:NAME" (tools/build_demo_model.py).
BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
# Legacy type strings: sentence-transformers 2.x-6.x all load these.
_ST_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Dense": "sentence_transformers.models.Dense",
    "Normalize": "sentence_transformers.models.Normalize",
}
_ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}


@dataclasses.dataclass(frozen=True)
class SentenceTransformerMeta:
    """What sentence-transformers keeps beside the weights: prompts and the input length."""

    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    max_seq_length: int | None = None
    similarity_fn_name: str = "cosine"

    @classmethod
    def from_folder(cls, folder: str) -> "SentenceTransformerMeta":
        st = _read_optional_json(folder, ST_CONFIG_FILE)
        seq = _read_optional_json(folder, ST_SEQ_FILE)
        prompts = st.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
            raise ConfigError(f"{ST_CONFIG_FILE} in {folder}: 'prompts' must map names to strings")
        default = st.get("default_prompt_name")
        if default is not None and default not in prompts:
            raise ConfigError(
                f"{ST_CONFIG_FILE} in {folder}: default_prompt_name {default!r} is not one of the "
                f"prompts {sorted(prompts)}")
        similarity = st.get("similarity_fn_name") or "cosine"
        max_len = seq.get("max_seq_length")
        return cls(dict(prompts), default, int(max_len) if max_len is not None else None,
                   similarity)

    def write(self, folder: str) -> None:
        _write_json(os.path.join(folder, ST_CONFIG_FILE), {
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": self.similarity_fn_name,
        })
        seq = {"do_lower_case": False}
        if self.max_seq_length is not None:
            seq["max_seq_length"] = self.max_seq_length
        _write_json(os.path.join(folder, ST_SEQ_FILE), seq)


@dataclasses.dataclass
class Checkpoint:
    """A loaded model: config, float32 numpy params, ST metadata, and where its tokenizer is."""

    config: ModelConfig
    params: Any
    meta: SentenceTransformerMeta
    folder: str


# ---- locating a checkpoint -------------------------------------------------------------------


def resolve_folder(path_or_id: str | os.PathLike, *, revision: str | None = None,
                   cache_dir: str | None = None, token: str | bool | None = None) -> str:
    """A local folder for a path or a hub id (downloaded through huggingface_hub).

    ``builtin:NAME`` is a model shipped inside the package (:func:`builtin_folder`;
    a hub id never holds a colon). A string that names an existing folder is used
    as is. One that looks like a path (``./x``, ``/x``, ``~``, several slashes) but
    does not exist is an error; anything else of the form ``owner/name`` is
    fetched from the hub, which honours ``HF_HUB_OFFLINE`` and the cache.
    """
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise TypeError(f"model must be a folder path or hub id string, got {type(path_or_id).__name__}")
    if isinstance(path_or_id, str) and path_or_id.startswith(BUILTIN_PREFIX):
        return builtin_folder(path_or_id)
    text = os.path.expanduser(os.fspath(path_or_id))
    if os.path.isdir(text):
        return text
    if os.path.exists(text):
        raise NotADirectoryError(f"{text} is a file; a model is a folder (or a hub id)")
    if not _HUB_ID.match(text):
        raise FileNotFoundError(f"model folder not found: {text}")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(text, revision=revision, cache_dir=cache_dir, token=token,
                                 allow_patterns=_HUB_PATTERNS)
    except Exception as e:  # network, auth, missing repo, offline mode
        raise FileNotFoundError(
            f"{text!r} is not a local folder and could not be fetched from the hub "
            f"({type(e).__name__}: {e})") from None


def builtin_models() -> list[str]:
    """Names of the models shipped inside the package (``builtin:NAME``)."""
    if not os.path.isdir(BUILTIN_DIR):
        return []
    return sorted(n for n in os.listdir(BUILTIN_DIR)
                  if os.path.isfile(os.path.join(BUILTIN_DIR, n, "config.json"))
                  or os.path.isfile(os.path.join(BUILTIN_DIR, n, FLAX_CONFIG_FILE)))


def builtin_folder(name: str) -> str:
    """The folder of a shipped model: ``"builtin:demo-mini"`` (or just ``"demo-mini"``)."""
    name = name.removeprefix(BUILTIN_PREFIX)
    if name not in builtin_models():
        available = ", ".join(BUILTIN_PREFIX + n for n in builtin_models()) or "none"
        raise FileNotFoundError(f"no built-in model {BUILTIN_PREFIX}{name} (available: "
                                f"{available})")
    return os.path.join(BUILTIN_DIR, name)


def is_flax_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, FLAX_CONFIG_FILE))


def load_checkpoint(path_or_id, *, revision=None, cache_dir=None, token=None) -> Checkpoint:
    """Load an HF/ST folder, a tarka-jax Flax folder, or a hub id, with float32 params."""
    folder = resolve_folder(path_or_id, revision=revision, cache_dir=cache_dir, token=token)
    if is_flax_folder(folder):
        config, params = load_flax_folder(folder)
    else:
        config, params = load_hf_folder(folder)
    params = _tree_map(lambda a: np.asarray(a, np.float32), params)
    return Checkpoint(config, params, SentenceTransformerMeta.from_folder(folder), folder)


# ---- HF / sentence-transformers folders -----------------------------------------------------


def load_hf_folder(folder: str) -> tuple[ModelConfig, dict]:
    """Config and params (in the stored dtype) of a sentence-transformers / HF folder."""
    hf_config = read_json(os.path.join(folder, "config.json"), "config.json")
    backbone = backbone_from_hf(hf_config)
    dense, normalize, dense_tensors = _read_st_modules(folder, backbone["hidden_size"])
    config = ModelConfig(**backbone, dense=tuple(dense), normalize=normalize)
    tensors = _strip_model_prefix(read_safetensors_folder(folder, "model"))
    tensors.update(dense_tensors)
    return config, hf_to_params(tensors, config, source=f"checkpoint {folder}")


def _read_st_modules(folder: str, hidden_size: int):
    """Dense specs, whether to normalise, and Dense tensors from modules.json.

    Without modules.json sentence-transformers builds Transformer + mean
    Pooling, so that is what a plain HF folder means here too.
    """
    path = os.path.join(folder, "modules.json")
    if not os.path.exists(path):
        return [], False, {}
    modules = read_json(path, "modules.json")
    if not isinstance(modules, list):
        raise ConfigError(f"modules.json in {folder} must be a list of modules")
    dense, tensors, normalize, seen = [], {}, False, []
    for entry in sorted(modules, key=lambda m: int(m.get("idx", 0))):
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        sub = os.path.join(folder, entry.get("path", ""))
        seen.append(kind)
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            _check_pooling(sub, hidden_size)
        elif kind == "Dense":
            spec, weights = _read_dense(sub)
            k = len(dense)
            dense.append(spec)
            tensors.update({f"dense_{k}.{name}": value for name, value in weights.items()})
        elif kind == "Normalize":
            normalize = True
        else:
            raise ConfigError(f"modules.json in {folder}: module type {entry.get('type')!r} is "
                              "not supported (Transformer, Pooling, Dense, Normalize are)")
    if seen[:2] != ["Transformer", "Pooling"]:
        raise ConfigError(f"modules.json in {folder} must start with Transformer, Pooling; got {seen}")
    return dense, normalize, tensors


def _check_pooling(folder: str, hidden_size: int) -> None:
    """Accept mean pooling in both config styles: ST 6 ``pooling_mode: "mean"`` and the
    legacy ``pooling_mode_mean_tokens: true`` flags."""
    cfg = read_json(os.path.join(folder, "config.json"), "Pooling config.json")
    mode = cfg.get("pooling_mode")
    modes = set([mode] if isinstance(mode, str) else (mode or []))
    modes |= {k[len("pooling_mode_"):].removesuffix("_tokens") for k, v in cfg.items()
              if k.startswith("pooling_mode_") and v is True}
    if modes != {"mean"}:
        raise ConfigError(f"{folder}: only mean pooling is supported; the config asks for "
                          f"{sorted(modes) or 'nothing'}")
    if not cfg.get("include_prompt", True):
        raise ConfigError(f"{folder}: include_prompt=false pooling is not supported")
    dim = cfg.get("embedding_dimension", cfg.get("word_embedding_dimension", hidden_size))
    if dim != hidden_size:
        raise ConfigError(f"{folder}: pooling dimension {dim} != hidden_size {hidden_size}")


def _read_dense(folder: str) -> tuple[DenseSpec, dict[str, np.ndarray]]:
    cfg = read_json(os.path.join(folder, "config.json"), "Dense config.json")
    activation = cfg.get("activation_function", "torch.nn.modules.linear.Identity")
    if activation not in _ACTIVATIONS:
        raise ConfigError(f"{folder}: Dense activation {activation!r} is not supported "
                          f"({sorted(_ACTIVATIONS)} are)")
    spec = DenseSpec(int(cfg["in_features"]), int(cfg["out_features"]), bool(cfg.get("bias", True)),
                     _ACTIVATIONS[activation])
    return spec, read_safetensors_folder(folder, "model")


def read_safetensors_folder(folder: str, stem: str) -> dict[str, np.ndarray]:
    """All tensors of ``{stem}.safetensors`` or its sharded form (``{stem}.safetensors.index.json``).

    A folder with only ``pytorch_model.bin`` is refused: pickles run code on
    load and we do not read them.
    """
    single = os.path.join(folder, f"{stem}.safetensors")
    index = os.path.join(folder, f"{stem}.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)
    if os.path.exists(index):
        weight_map = read_json(index, os.path.basename(index)).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ConfigError(f"{index} has no weight_map")
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            part = read_safetensors(os.path.join(folder, shard))
            tensors.update(part)
        listed, present = set(weight_map), set(tensors)
        if listed != present:
            raise CheckpointMismatch(
                f"{index}: shards hold {sorted(present - listed)[:5]} not in the index and lack "
                f"{sorted(listed - present)[:5]}")
        return tensors
    if any(os.path.exists(os.path.join(folder, n)) for n in ("pytorch_model.bin", f"{stem}.bin")):
        raise CheckpointMismatch(
            f"{folder} holds only pytorch_model.bin; tarka-jax reads safetensors only. Convert it "
            "once with transformers (model.save_pretrained(out, safe_serialization=True)).")
    raise FileNotFoundError(f"no {stem}.safetensors (or sharded index) in {folder}")


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Read one safetensors file; a truncated or corrupt file is an error naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not os.path.exists(path):
        raise FileNotFoundError(f"safetensors file not found: {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointMismatch(f"cannot read {path}: it is truncated or corrupt ({e})") from None


def _strip_model_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Gemma3TextModel.save_pretrained writes bare keys; some exports carry "model.".
    if tensors and all(k.startswith("model.") for k in tensors):
        return {k[len("model."):]: v for k, v in tensors.items()}
    return tensors


# ---- tarka-jax Flax folders -----------------------------------------------------------------


def load_flax_folder(folder: str) -> tuple[ModelConfig, dict]:
    meta = read_json(os.path.join(folder, FLAX_CONFIG_FILE), FLAX_CONFIG_FILE)
    if meta.get("format") != "tarka-jax" or "model" not in meta:
        raise ConfigError(f"{FLAX_CONFIG_FILE} in {folder} is not a tarka-jax config")
    config = ModelConfig.from_dict(meta["model"])
    flat = read_safetensors(os.path.join(folder, FLAX_PARAMS_FILE))
    params: dict = {}
    for key, value in flat.items():
        node = params
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    # Validate through the key table (strict names and shapes).
    hf_to_params(params_to_hf(params, config), config, source=f"Flax folder {folder}")
    return config, params


def save_flax_folder(out_dir: str, config: ModelConfig, params, meta: SentenceTransformerMeta,
                     tokenizer_folder: str | None, *, dtype: str = "keep") -> None:
    """Write a tarka-jax Flax folder (params keyed by Flax path)."""
    params_to_hf(params, config)  # strict check before writing anything
    os.makedirs(out_dir, exist_ok=True)
    flat = {"/".join(k.key for k in path): _cast(np.asarray(leaf), dtype)
            for path, leaf in _flatten(params)}
    _save_safetensors(flat, os.path.join(out_dir, FLAX_PARAMS_FILE))
    _write_json(os.path.join(out_dir, FLAX_CONFIG_FILE),
                {"format": "tarka-jax", "version": FLAX_FORMAT_VERSION, "model": config.to_dict()})
    meta.write(out_dir)
    copy_tokenizer_files(tokenizer_folder, out_dir)


def save_sentence_transformers(out_dir: str, config: ModelConfig, params,
                               meta: SentenceTransformerMeta, tokenizer_folder: str | None, *,
                               dtype: str = "float32") -> None:
    """Write a folder ``SentenceTransformer(out_dir)`` loads with the same embeddings.

    Module type strings are the legacy ``sentence_transformers.models.*`` ones,
    which both current and older sentence-transformers load.
    """
    tensors = params_to_hf(params, config)
    if dtype == "keep":  # a bfloat16 Flax folder stays bfloat16, anything else is float32
        dtype = "bfloat16" if all(v.dtype.name == "bfloat16" for v in tensors.values()) else "float32"
    os.makedirs(out_dir, exist_ok=True)
    backbone = {k: _cast(v, dtype) for k, v in tensors.items() if not k.startswith("dense_")}
    _save_safetensors(backbone, os.path.join(out_dir, "model.safetensors"))
    hf_config = config.to_hf_config()
    hf_config["dtype"] = "bfloat16" if dtype == "bfloat16" else "float32"
    _write_json(os.path.join(out_dir, "config.json"), hf_config)
    modules = [{"idx": 0, "name": "0", "path": "", "type": _ST_TYPES["Transformer"]},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST_TYPES["Pooling"]}]
    os.makedirs(os.path.join(out_dir, "1_Pooling"), exist_ok=True)
    _write_json(os.path.join(out_dir, "1_Pooling", "config.json"), {
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False,
        "include_prompt": True,
    })
    activation_names = {v: k for k, v in _ACTIVATIONS.items()}
    for k, spec in enumerate(config.dense):
        idx = len(modules)
        sub = f"{idx}_Dense"
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
        _write_json(os.path.join(out_dir, sub, "config.json"), {
            "in_features": spec.in_features, "out_features": spec.out_features,
            "bias": spec.bias, "activation_function": activation_names[spec.activation],
        })
        weights = {name.split(".", 1)[1]: _cast(v, dtype)
                   for name, v in tensors.items() if name.startswith(f"dense_{k}.")}
        _save_safetensors(weights, os.path.join(out_dir, sub, "model.safetensors"))
        modules.append({"idx": idx, "name": str(idx), "path": sub, "type": _ST_TYPES["Dense"]})
    if config.normalize:
        idx = len(modules)
        os.makedirs(os.path.join(out_dir, f"{idx}_Normalize"), exist_ok=True)
        modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize",
                        "type": _ST_TYPES["Normalize"]})
    _write_json(os.path.join(out_dir, "modules.json"), modules)
    meta.write(out_dir)
    copy_tokenizer_files(tokenizer_folder, out_dir)


def copy_tokenizer_files(src: str | None, dst: str) -> None:
    """Copy whichever tokenizer files exist; a model needs at least tokenizer.json."""
    if src is None:
        return
    if not os.path.exists(os.path.join(src, "tokenizer.json")):
        raise FileNotFoundError(f"tokenizer.json not found in {src}")
    for name in TOKENIZER_FILES:
        path = os.path.join(src, name)
        if os.path.exists(path) and os.path.abspath(src) != os.path.abspath(dst):
            shutil.copyfile(path, os.path.join(dst, name))


# ---- small helpers ---------------------------------------------------------------------------


def _cast(array: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "keep":
        return np.ascontiguousarray(array)
    if dtype == "float32":
        return np.ascontiguousarray(array, dtype=np.float32)
    if dtype == "bfloat16":
        import ml_dtypes

        return np.ascontiguousarray(np.asarray(array, np.float32).astype(ml_dtypes.bfloat16))
    raise ValueError(f"storage dtype must be keep, float32 or bfloat16; got {dtype!r}")


def _save_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, path, metadata={"format": "pt"})


def _flatten(tree):
    import jax

    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _tree_map(fn, tree):
    import jax

    return jax.tree_util.tree_map(fn, tree)


def _read_optional_json(folder: str, name: str) -> dict:
    path = os.path.join(folder, name)
    return read_json(path, name) if os.path.exists(path) else {}


def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")

"""sentence-transformers / HF folders: modules.json, Pooling, Dense, prompts, tokenizer files.

Reading: ``config.json`` + ``model.safetensors`` (single or sharded; keys with
or without a ``model.`` prefix) + the modules after the backbone. Writing: a
folder ``SentenceTransformer(out)`` loads with the same embeddings, using the
legacy ``sentence_transformers.models.*`` type strings that sentence-transformers
2.x-6.x all load.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings

import numpy as np

from tarka_jax.convert.mapping import hf_to_params, params_to_hf
from tarka_jax.convert.safetensors_io import (
    cast,
    open_safetensors_folder,
    read_safetensors_folder,
    write_safetensors,
)
from tarka_jax.files.inside import inside
from tarka_jax.files.jsonfiles import read_json, read_optional_json, write_json
from tarka_jax.nn.config import ConfigError, DenseSpec, ModelConfig
from tarka_jax.nn.size_limits import size

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "tokenizer.model", "chat_template.jinja")
ST_CONFIG_FILE = "config_sentence_transformers.json"
ST_SEQ_FILE = "sentence_bert_config.json"
#: module kind -> the type string written to modules.json (read: the last dotted part).
ST_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Dense": "sentence_transformers.models.Dense",
    "Normalize": "sentence_transformers.models.Normalize",
}
#: Dense activation_function string -> DenseSpec.activation
ACTIVATIONS = {
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
        st = read_optional_json(folder, ST_CONFIG_FILE)
        seq = read_optional_json(folder, ST_SEQ_FILE)
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
        if max_len is not None and (type(max_len) is not int or max_len < 1):
            raise ConfigError(f"{ST_SEQ_FILE} in {folder}: max_seq_length must be a positive "
                              f"integer, got {max_len!r:.60}")
        return cls(dict(prompts), default, max_len, similarity)

    def within(self, positions: int, folder: str) -> "SentenceTransformerMeta":
        """This metadata with ``max_seq_length`` at most the model's ``positions`` (a warning
        says so): a saved 10**12 must not size the bucket tables or the tokenizer."""
        if self.max_seq_length is None or self.max_seq_length <= positions:
            return self
        warnings.warn(f"{ST_SEQ_FILE} in {folder}: max_seq_length {self.max_seq_length} "
                      f"exceeds the model's {positions} positions; using {positions}",
                      stacklevel=3)
        return dataclasses.replace(self, max_seq_length=positions)

    def write(self, folder: str) -> None:
        write_json(os.path.join(folder, ST_CONFIG_FILE), {
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": self.similarity_fn_name,
        })
        seq = {"do_lower_case": False}
        if self.max_seq_length is not None:
            seq["max_seq_length"] = self.max_seq_length
        write_json(os.path.join(folder, ST_SEQ_FILE), seq)


# ---- reading ---------------------------------------------------------------------------------


def load_hf_folder(folder: str) -> tuple[ModelConfig, dict]:
    """Config and params (in the stored dtype) of a sentence-transformers / HF folder."""
    path = os.path.join(folder, "config.json")
    backbone = ModelConfig.from_hf(read_json(path, "config.json"), source=path)
    dense, normalize, dense_tensors = read_st_head(folder, backbone.hidden_size)
    config = backbone.replace(dense=tuple(dense), normalize=normalize)
    with open_safetensors_folder(folder, "model") as stored:  # read tensor by tensor below
        tensors = _strip_model_prefix(stored)
        tensors.update(dense_tensors)
        return config, hf_to_params(tensors, config, source=f"checkpoint {folder}")


def read_st_head(folder: str, hidden_size: int):
    """``(dense specs, normalize, {"dense_k.linear.weight": ...})`` from modules.json.

    Without modules.json sentence-transformers builds Transformer + mean
    Pooling, so that is what a plain HF folder means here too.
    """
    if not os.path.exists(os.path.join(folder, "modules.json")):
        return [], False, {}
    dense, tensors, normalize, seen = [], {}, False, []
    for kind, sub, entry in module_entries(folder):
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
            raise ConfigError(f"modules.json in {folder}: module type {entry['type']!r} is "
                              f"not supported ({', '.join(ST_TYPES)} are)")
    if seen[:2] != ["Transformer", "Pooling"]:
        raise ConfigError(f"modules.json in {folder} must start with Transformer, Pooling; "
                          f"got {seen}")
    return dense, normalize, tensors


def module_entries(folder: str) -> list[tuple[str, str, dict]]:
    """``[(kind, module folder, entry)]`` of modules.json in ``idx`` order, every entry checked:
    a JSON object with a string ``type``, an integer ``idx`` and a ``path`` inside ``folder``
    (:func:`tarka_jax.files.inside.inside`); anything else is a ConfigError naming the entry."""
    modules = read_json(os.path.join(folder, "modules.json"), "modules.json")
    if not isinstance(modules, list) or not modules:
        raise ConfigError(f"modules.json in {folder} must be a non-empty list of modules")
    out = []
    for i, entry in enumerate(modules):
        where = f"modules.json entry {i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} in {folder} must be an object with 'type' and 'path', "
                              f"got {type(entry).__name__} {entry!r:.60}")
        idx = entry.get("idx", i)
        if not isinstance(entry.get("type"), str) or type(idx) is not int:
            raise ConfigError(f"{where} in {folder} needs a string 'type' and an integer 'idx'; "
                              f"got type={entry.get('type')!r:.60}, idx={idx!r:.60}")
        sub = inside(folder, entry.get("path", ""), f"{where} 'path'", empty=True)
        out.append((idx, entry["type"].rsplit(".", 1)[-1], sub, entry))
    if len({idx for idx, *_ in out}) != len(out):
        raise ConfigError(f"modules.json in {folder} repeats an 'idx': "
                          f"{[idx for idx, *_ in out]}")
    return [(kind, sub, entry) for _, kind, sub, entry in sorted(out, key=lambda m: m[0])]


def _check_pooling(folder: str, hidden_size: int) -> None:
    """Accept mean pooling in both config styles: ST 6 ``pooling_mode: "mean"`` and the
    legacy ``pooling_mode_mean_tokens: true`` flags."""
    cfg = _module_config(folder, "Pooling")
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
    cfg = _module_config(folder, "Dense")
    activation = cfg.get("activation_function", "torch.nn.modules.linear.Identity")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"{folder}: Dense activation {activation!r} is not supported "
                          f"({sorted(ACTIVATIONS)} are)")
    where = os.path.join(folder, "config.json")
    sizes = [size(cfg.get(k), k, where) for k in ("in_features", "out_features")]
    spec = DenseSpec(*sizes, bool(cfg.get("bias", True)), ACTIVATIONS[activation])
    return spec, read_safetensors_folder(folder, "model")


def _module_config(folder: str, kind: str) -> dict:
    cfg = read_json(os.path.join(folder, "config.json"), f"{kind} config.json")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{kind} config.json in {folder} must hold a JSON object")
    return cfg


def _strip_model_prefix(tensors: dict) -> dict:
    # Gemma3TextModel.save_pretrained writes bare keys; some exports carry "model.".
    if tensors and all(k.startswith("model.") for k in tensors):
        return {k[len("model."):]: v for k, v in tensors.items()}
    return tensors


# ---- writing ---------------------------------------------------------------------------------


def pooling_config(hidden_size: int) -> dict:
    """Mean pooling, written in the legacy flag style every sentence-transformers reads."""
    return {"word_embedding_dimension": hidden_size,
            "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False,
            "include_prompt": True}


def save_sentence_transformers(out_dir: str, config: ModelConfig, params,
                               meta: SentenceTransformerMeta, tokenizer_folder: str | None, *,
                               dtype: str = "float32") -> None:
    """Write a folder ``SentenceTransformer(out_dir)`` loads with the same embeddings."""
    tensors = params_to_hf(params, config)
    if dtype == "keep":  # a bfloat16 Flax folder stays bfloat16, anything else is float32
        bf16 = all(v.dtype.name == "bfloat16" for v in tensors.values())
        dtype = "bfloat16" if bf16 else "float32"
    os.makedirs(out_dir, exist_ok=True)
    backbone = {k: cast(v, dtype) for k, v in tensors.items() if not k.startswith("dense_")}
    write_safetensors(backbone, os.path.join(out_dir, "model.safetensors"))
    write_json(os.path.join(out_dir, "config.json"), dict(config.to_hf(), dtype=dtype))
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TYPES["Transformer"]}]

    def add(kind: str, module_config: dict | None, weights: dict | None = None) -> None:
        idx = len(modules)
        sub = f"{idx}_{kind}"
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
        if module_config is not None:
            write_json(os.path.join(out_dir, sub, "config.json"), module_config)
        if weights is not None:
            write_safetensors(weights, os.path.join(out_dir, sub, "model.safetensors"))
        modules.append({"idx": idx, "name": str(idx), "path": sub, "type": ST_TYPES[kind]})

    add("Pooling", pooling_config(config.hidden_size))
    activation_names = {v: k for k, v in ACTIVATIONS.items()}
    for k, spec in enumerate(config.dense):
        add("Dense", {"in_features": spec.in_features, "out_features": spec.out_features,
                      "bias": spec.bias, "activation_function": activation_names[spec.activation]},
            {name.split(".", 1)[1]: cast(v, dtype)
             for name, v in tensors.items() if name.startswith(f"dense_{k}.")})
    if config.normalize:
        add("Normalize", None)
    write_json(os.path.join(out_dir, "modules.json"), modules)
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

"""Model configuration: one frozen dataclass, parsed from and written back to HF config.json.

The backbone fields mirror transformers' ``Gemma3TextConfig`` (5.x semantics);
the head fields describe the sentence-transformers modules after the backbone
(mean pooling, zero or more Dense layers, optional Normalize). The HF round
trip is :meth:`ModelConfig.from_hf` / :meth:`ModelConfig.to_hf`; the
sentence-transformers module files (modules.json, Pooling, Dense) are read and
written by :mod:`tarka_jax.convert.st_folder`. One layer is described on its own
by a :class:`LayerSpec` (:meth:`ModelConfig.layer`), so a single decoder layer
can be built and tested without the whole stack.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tarka_jax.errors import ConfigError
from tarka_jax.nn.size_limits import check_sizes, positive, size

SLIDING = "sliding_attention"
FULL = "full_attention"
_SUPPORTED_ROPE_TYPES = ("default", "linear")


def layer_types_pattern(num_layers: int, every: int) -> tuple[str, ...]:
    """Gemma 3's interleave: every ``every``-th layer (1-based) is full, the rest slide.

    ``layer_types_pattern(6, 3)`` is (sliding, sliding, full, sliding, sliding, full).
    """
    if every < 1:
        raise ConfigError(f"the sliding-window pattern must be >= 1, got {every}")
    return tuple(SLIDING if (i + 1) % every else FULL for i in range(num_layers))


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What one decoder layer needs beyond the shared sizes.

    Attributes:
      kind: ``"sliding_attention"`` or ``"full_attention"``.
      window: inclusive (left, right) key range around each query; None = full
        (the convention of :func:`tarka_jax.kernels.attention`, docs/attention.md).
      rope_theta, rope_factor: the rotary base and "linear" scaling factor (1 = none).
    """

    kind: str
    window: tuple[int, int] | None
    rope_theta: float
    rope_factor: float = 1.0


@dataclasses.dataclass(frozen=True)
class DenseSpec:
    """One sentence-transformers Dense module: y = activation(x @ W + b)."""

    in_features: int
    out_features: int
    bias: bool = False
    activation: str = "identity"  # "identity" or "tanh"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything the forward pass needs, and nothing it does not."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    query_pre_attn_scalar: float
    layer_types: tuple[str, ...]
    # The value config.json serialises (512 for EmbeddingGemma). transformers 5.x
    # halves it on load (512 -> 257, exclusive); we keep the serialised value and
    # derive the inclusive window in `window_for`. None = no sliding layers.
    sliding_window: int | None
    rope_theta_full: float = 1_000_000.0
    rope_theta_sliding: float = 10_000.0
    rope_scaling_full: float = 1.0  # "linear" rope_type factor; 1.0 = default RoPE
    rope_scaling_sliding: float = 1.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048
    pad_token_id: int = 0
    dense: tuple[DenseSpec, ...] = ()
    normalize: bool = True

    def __post_init__(self):
        check_sizes(self)  # first: nothing below divides by zero or loops over a hostile size
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if len(self.layer_types) != self.num_layers:
            raise ConfigError(
                f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers"
            )
        unknown = sorted({str(t) for t in self.layer_types} - {SLIDING, FULL})
        if unknown:
            raise ConfigError(f"unknown layer types {unknown}; expected {SLIDING!r} or {FULL!r}")
        if SLIDING in self.layer_types and not self.sliding_window:
            raise ConfigError("sliding_attention layers need a positive sliding_window")
        width = self.hidden_size
        for i, spec in enumerate(self.dense):
            if spec.in_features != width:
                raise ConfigError(
                    f"Dense module {i} takes {spec.in_features} features but receives {width}"
                )
            width = spec.out_features

    @property
    def embedding_dim(self) -> int:
        """Size of the final sentence embedding."""
        return self.dense[-1].out_features if self.dense else self.hidden_size

    @property
    def attention_scale(self) -> float:
        # Gemma 3 scales by query_pre_attn_scalar, not head_dim (equal for Tarka).
        return float(self.query_pre_attn_scalar) ** -0.5

    def layer(self, i: int) -> LayerSpec:
        """The explicit per-layer fields of layer ``i`` (window and rotary)."""
        theta, factor = self.rope_for(i)
        return LayerSpec(self.layer_types[i], self.window_for(i), theta, factor)

    def window_for(self, layer: int) -> tuple[int, int] | None:
        """Inclusive (left, right) window of a layer; None for full attention.

        transformers 5.x (bidirectional) attends where |q - k| < sw // 2 + 1,
        i.e. |q - k| <= sw // 2: 512 -> (256, 256).
        """
        if self.layer_types[layer] == FULL:
            return None
        half = self.sliding_window // 2
        return (half, half)

    def rope_for(self, layer: int) -> tuple[float, float]:
        """(theta, linear scaling factor) of a layer's rotary embedding."""
        if self.layer_types[layer] == FULL:
            return self.rope_theta_full, self.rope_scaling_full
        return self.rope_theta_sliding, self.rope_scaling_sliding

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ---- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["layer_types"] = list(self.layer_types)
        out["dense"] = [dataclasses.asdict(d) for d in self.dense]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a tarka-jax model config must be a JSON object, got "
                              f"{type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown tarka-jax config keys: {unknown}")
        data = dict(data)
        dense = data.get("dense", ())
        if not isinstance(data.get("layer_types"), list) or not isinstance(dense, (list, tuple)) \
                or not all(isinstance(d, dict) for d in dense):
            raise ConfigError("a tarka-jax model config needs a 'layer_types' list and a 'dense' "
                              "list of objects")
        data["layer_types"] = tuple(data["layer_types"])
        try:
            data["dense"] = tuple(DenseSpec(**d) for d in dense)
            return cls(**data)
        except TypeError as e:  # a missing or unknown key
            raise ConfigError(f"malformed tarka-jax model config: {e}") from None

    @classmethod
    def from_hf(cls, hf_config: dict[str, Any], *, dense: tuple[DenseSpec, ...] = (),
                normalize: bool = False, source: str = "config.json") -> "ModelConfig":
        """The config of a transformers ``config.json`` dict plus a sentence-transformers head.

        Without a head (``dense=()``, ``normalize=False``) this is what a plain HF
        folder means to sentence-transformers: Transformer + mean Pooling. An error
        names ``source`` (the file's path, when the caller knows it).
        """
        try:
            return cls(**backbone_from_hf(hf_config), dense=tuple(dense), normalize=normalize)
        except ConfigError as e:
            message = str(e).removeprefix("config.json").lstrip(": ")
            raise ConfigError(f"{source}: {message}") from None

    def to_hf(self) -> dict[str, Any]:
        """A config.json that transformers 5.x loads as the same backbone."""
        def rope(theta, factor):
            entry = {"rope_type": "default", "rope_theta": theta}
            if factor != 1.0:
                entry = {"rope_type": "linear", "rope_theta": theta, "factor": factor}
            return entry

        return {
            "architectures": ["Gemma3TextModel"],
            "model_type": "gemma3_text",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            # transformers validates this field as an int; keep integral values integral.
            "query_pre_attn_scalar": (int(self.query_pre_attn_scalar)
                                      if float(self.query_pre_attn_scalar).is_integer()
                                      else self.query_pre_attn_scalar),
            "hidden_activation": "gelu_pytorch_tanh",
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "layer_types": list(self.layer_types),
            # transformers halves this even when no layer slides, so never write null.
            "sliding_window": self.sliding_window if self.sliding_window is not None else 512,
            "rope_parameters": {
                FULL: rope(self.rope_theta_full, self.rope_scaling_full),
                SLIDING: rope(self.rope_theta_sliding, self.rope_scaling_sliding),
            },
            "attention_bias": False,
            "attn_logit_softcapping": None,
            "final_logit_softcapping": None,
            "use_bidirectional_attention": True,
            "pad_token_id": self.pad_token_id,
            "dtype": "float32",
        }


def _rope_entry(hf: dict, layer_type: str) -> tuple[float, float]:
    """(theta, factor) for one layer type, the way transformers 5.x resolves it.

    5.x configs carry nested ``rope_parameters``; legacy ones carry
    ``rope_theta`` (full layers), ``rope_local_base_freq`` (sliding layers) and
    ``rope_scaling`` (merged into the full-attention entry only).
    """
    nested = hf.get("rope_parameters")
    if isinstance(nested, dict) and layer_type in nested:
        entry = dict(nested[layer_type] or {})
    elif isinstance(nested, dict) and "rope_type" in nested:
        entry = dict(nested)  # one entry for every layer type
    else:
        if layer_type == FULL:
            entry = {"rope_theta": hf.get("rope_theta", 1_000_000.0)}
            entry.update(hf.get("rope_scaling") or {})
        else:
            entry = {"rope_theta": hf.get("rope_local_base_freq", 10_000.0)}
    default_theta = 1_000_000.0 if layer_type == FULL else 10_000.0
    rope_type = entry.get("rope_type", entry.get("type", "default"))
    if rope_type not in _SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"rope_type {rope_type!r} for {layer_type} is not supported; "
            f"tarka-jax serves {list(_SUPPORTED_ROPE_TYPES)}"
        )
    factor = float(entry.get("factor", 1.0)) if rope_type == "linear" else 1.0
    return float(entry.get("rope_theta", default_theta)), factor


def _layer_types(hf: dict, num_layers: int) -> tuple[str, ...]:
    if hf.get("layer_types"):
        if not isinstance(hf["layer_types"], list):
            raise ConfigError("config.json: layer_types must be a list")
        return tuple(hf["layer_types"])
    # transformers reads the kwarg `sliding_window_pattern` (default 6); the
    # `_sliding_window_pattern` some configs carry is informational only.
    every = size(hf.get("sliding_window_pattern", 6), "sliding_window_pattern")
    return layer_types_pattern(num_layers, every)


def backbone_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """Backbone fields of ModelConfig from a transformers ``config.json`` dict."""
    if not isinstance(hf, dict):
        raise ConfigError(f"config.json must hold a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type not in ("gemma3_text", "gemma3"):
        raise ConfigError(
            f"model_type {model_type!r} is not supported; tarka-jax serves gemma3_text encoders"
        )
    if model_type == "gemma3":
        if "text_config" not in hf:
            raise ConfigError("a gemma3 config needs a text_config")
        hf = dict(hf["text_config"], model_type="gemma3_text")
    if not hf.get("use_bidirectional_attention", False):
        raise ConfigError(
            "this config describes a causal (decoder) Gemma 3; tarka-jax serves bidirectional "
            "encoders only (use_bidirectional_attention must be true)"
        )
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if hf.get(key) is not None:
            raise ConfigError(f"{key}={hf[key]} is set; logit soft-capping is not supported")
    if hf.get("attention_bias", False):
        raise ConfigError("attention_bias=true is not supported (Gemma 3 encoders have none)")
    activation = hf.get("hidden_activation", hf.get("hidden_act", "gelu_pytorch_tanh"))
    if activation not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise ConfigError(f"hidden_activation {activation!r} is not supported")
    try:
        return _backbone_fields(hf)
    except KeyError as e:
        raise ConfigError(f"config.json lacks the required key {e.args[0]!r}") from None
    except ConfigError:
        raise
    except (TypeError, ValueError, AttributeError) as e:  # a value of the wrong JSON type
        raise ConfigError(f"config.json holds a malformed value: {e}") from None


def _backbone_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """The sizes first, each within its ceiling (:mod:`tarka_jax.nn.size_limits`), before
    anything is built from them (a layer-type tuple of num_hidden_layers entries)."""
    hidden = size(hf["hidden_size"], "hidden_size")
    heads = size(hf["num_attention_heads"], "num_attention_heads")
    head_dim = hf.get("head_dim")
    fields = dict(
        vocab_size=size(hf["vocab_size"], "vocab_size"),
        hidden_size=hidden,
        intermediate_size=size(hf["intermediate_size"], "intermediate_size"),
        num_layers=size(hf["num_hidden_layers"], "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=size(hf.get("num_key_value_heads", heads), "num_key_value_heads"),
        head_dim=size(hidden // heads if head_dim is None else head_dim, "head_dim"),
        max_position_embeddings=size(hf.get("max_position_embeddings", 2048),
                                     "max_position_embeddings"),
    )
    fields["query_pre_attn_scalar"] = positive(
        hf.get("query_pre_attn_scalar", fields["head_dim"]), "query_pre_attn_scalar")
    theta_full, factor_full = _rope_entry(hf, FULL)
    theta_sliding, factor_sliding = _rope_entry(hf, SLIDING)
    sliding_window = hf.get("sliding_window")
    return dict(
        fields,
        layer_types=_layer_types(hf, fields["num_layers"]),
        sliding_window=None if sliding_window is None else size(sliding_window, "sliding_window"),
        rope_theta_full=theta_full,
        rope_theta_sliding=theta_sliding,
        rope_scaling_full=factor_full,
        rope_scaling_sliding=factor_sliding,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        pad_token_id=int(hf.get("pad_token_id") or 0),
    )


def _preset(vocab_size: int, pad_token_id: int) -> ModelConfig:
    layer_types = layer_types_pattern(24, 6)
    return ModelConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        intermediate_size=1152,
        num_layers=24,
        num_heads=3,
        num_kv_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        layer_types=layer_types,
        sliding_window=512,
        max_position_embeddings=2048,
        pad_token_id=pad_token_id,
        dense=(DenseSpec(768, 3072), DenseSpec(3072, 768)),
        normalize=True,
    )


def tarka_150m() -> ModelConfig:
    """Tarka-Embedding-150M-V1: EmbeddingGemma's stack with the 64,400-token LFM2 vocabulary."""
    return _preset(vocab_size=64_400, pad_token_id=0)


def embeddinggemma_300m() -> ModelConfig:
    """google/embeddinggemma-300m: 262,144-token Gemma vocabulary."""
    return _preset(vocab_size=262_144, pad_token_id=0)


PRESETS = {"tarka-150m": tarka_150m, "embeddinggemma-300m": embeddinggemma_300m}

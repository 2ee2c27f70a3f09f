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

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from tarka_jax.recipe.prompts import TASK_PROMPTS

# Prompts as EmbeddingGemma ships them (REFERENCE.md section 4); one table for the package.
GEMMA_PROMPTS = TASK_PROMPTS

_CORPUS_WORDS = (
    "the a of to and in is it that for on with as was by at from this be are or an which "
    "planet mars venus jupiter saturn red gas giant ring moon sun star orbit space light "
    "query document search result text title none task clustering classification code "
    "retrieval sentence similarity summarization jax flax torch model embedding vector "
    "attention window layer norm token batch padding kernel gradient loss teacher student"
).split()

SAMPLE_TEXTS = (
    "Which planet is known as the Red Planet?",
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
    "",
    "x",
)


def long_text(n_words: int, seed: int = 0) -> str:
    """A deterministic pseudo-sentence of ``n_words`` corpus words."""
    words = [_CORPUS_WORDS[(seed * 7919 + i * 104729) % len(_CORPUS_WORDS)] for i in range(n_words)]
    return " ".join(words)


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


def train_tokenizer(vocab_size: int, out_dir: str) -> Tokenizer:
    """A WordPiece tokenizer with Gemma's special-token ids: <pad>=0, <eos>=1, <bos>=2."""
    tok = Tokenizer(models.WordPiece(unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
        min_frequency=1, show_progress=False,
    )
    corpus = [long_text(40, s) for s in range(50)] + list(SAMPLE_TEXTS)
    corpus += list(GEMMA_PROMPTS.values()) + ["abcdefghijklmnopqrstuvwxyz0123456789'?,.|:!"]
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>",
        special_tokens=[("<bos>", 2), ("<eos>", 1)],
    )
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    return tok


def _write_tokenizer_config(out_dir: str, spec: TinySpec) -> None:
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "padding_side": "right",
        "model_max_length": spec.max_seq_length,
    }
    if spec.tokenizer_add_flags is not None:
        config["add_bos_token"], config["add_eos_token"] = spec.tokenizer_add_flags
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


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
    layer_types = list(spec.layer_types or [
        "sliding_attention" if (i + 1) % 3 else "full_attention" for i in range(spec.num_layers)
    ])
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


_LEGACY_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Dense": "sentence_transformers.models.Dense",
    "Normalize": "sentence_transformers.models.Normalize",
}


def _legacy_module_types(folder: str) -> None:
    path = os.path.join(folder, "modules.json")
    with open(path) as f:
        modules = json.load(f)
    for m in modules:
        m["type"] = _LEGACY_TYPES[m["type"].rsplit(".", 1)[-1]]
    with open(path, "w") as f:
        json.dump(modules, f, indent=2)


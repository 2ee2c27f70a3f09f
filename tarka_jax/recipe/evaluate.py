"""How close a student is to its teacher on held-out texts.

Two numbers, both computed on the same texts with the same prompts:

* ``eval_cosine``: mean cosine between the student's and the teacher's embedding
  of each text (first ``dim`` coordinates, re-normalised; needs comparable
  coordinates, so it is left out when the widths differ and no ``dim`` is given).
* ``eval_top1``: how often the student's nearest neighbour of a text among the
  *other* held-out texts is the teacher's nearest neighbour (cosine; ties go to
  the lower index). Coordinate-free: it works across widths, and it measures what
  retrieval uses -- the ranking, not the coordinates.

``tarka-jax evaluate`` computes them for any checkpoint folder or saved step of
a run folder against a teacher model or a teacher cache's eval split; with
``--pairs FILE.jsonl`` (alone or with a teacher) it also scores retrieval and STS.
"""

from __future__ import annotations

import numpy as np

from tarka_jax.errors import UsageError
from tarka_jax.train.metrics import agreement, nearest_neighbours  # noqa: F401 (public here too)

# ---- the command ----------------------------------------------------------------------------


def _student_embedder(path: str, step: int | None, dtype: str, max_seq_length: int | None):
    """An Embedder for any model source, a run folder's ``step`` included."""
    from tarka_jax.convert import open_model
    from tarka_jax.inference.embedder import Embedder
    from tarka_jax.text.tokenizer import TextTokenizer

    ck = open_model(path, step=step)
    tok = TextTokenizer.from_folder(ck.folder, max_seq_length or ck.meta.max_seq_length,
                                    max_position_embeddings=ck.config.max_position_embeddings)
    return Embedder(ck.config, ck.params, tok, prompts=ck.meta.prompts,
                    default_prompt_name=ck.meta.default_prompt_name, dtype=dtype)


def evaluate(student: str, texts_files=(), *, teacher: str | None = None,
             teacher_cache: str | None = None, step: int | None = None, text_field: str = "text",
             prompt_mix=None, seed: int = 0, dim: int | None = None, dtype: str = "float32",
             max_seq_length: int | None = None, batch_size: int = 32,
             pairs: str | None = None) -> dict:
    """A checkpoint (or run step) on held-out data: with ``pairs`` (a .jsonl of
    ``{"query", "document"[, "score"]}`` records) retrieval (nDCG@10, MRR, recall@k) and STS
    Spearman (:mod:`tarka_jax.evaluation.scores`); with a teacher model or cache, agreement
    with it on held-out texts (``texts_files``; default: the cache's eval split, or the
    pairs' queries and documents). Either or both; every file is checked before the model
    is loaded."""
    if teacher and teacher_cache:
        raise UsageError("give at most one of --teacher and --teacher-cache")
    if not (teacher or teacher_cache or pairs):
        raise UsageError("give --pairs FILE.jsonl (retrieval and STS scores of the model), and/or "
                         "a teacher to compare with (--teacher MODEL or --teacher-cache DIR)")
    if texts_files and not (teacher or teacher_cache):
        raise UsageError("--texts are compared with a teacher: give --teacher or --teacher-cache")
    records = read_pairs(pairs) if pairs else None
    if teacher and not texts_files and records is None:
        raise UsageError("--teacher needs held-out texts: --texts FILE... or --pairs FILE.jsonl")
    model = _student_embedder(student, step, dtype, max_seq_length)
    out = {}
    if teacher or teacher_cache:
        pair_texts = [r[k] for r in records or () for k in ("query", "document")]
        out.update(_agreement(model, texts_files, pair_texts, teacher, teacher_cache, text_field,
                              prompt_mix, seed, dim, dtype, max_seq_length, batch_size))
    if records is not None:
        from tarka_jax.evaluation.scores import evaluate_pairs

        out.update(evaluate_pairs(model, records, batch_size=batch_size))
    return out


def read_pairs(path: str) -> list[dict]:
    """The records of a pairs file: JSON objects with string ``query`` and ``document`` and,
    in every record or none, a numeric ``score``; anything else names file and line."""
    from tarka_jax.files.jsonfiles import read_jsonl

    records = read_jsonl(path, None, UsageError)
    for n, r in records:
        if not (isinstance(r.get("query"), str) and isinstance(r.get("document"), str)):
            raise UsageError(f'{path}:{n} needs string "query" and "document" fields')
        score = r.get("score", 0.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise UsageError(f'{path}:{n}: "score" must be a number, got {score!r:.40}')
    if not records:
        raise UsageError(f"{path} holds no pairs")
    return [r for _, r in records]


def _agreement(model, texts_files, pair_texts, teacher, teacher_cache, text_field, prompt_mix,
               seed, dim, dtype, max_seq_length, batch_size) -> dict:
    """``texts``, ``eval_cosine``, ``eval_top1`` of the student against the teacher."""
    from tarka_jax.recipe.teacher_cache import TeacherCache, _embed_split
    from tarka_jax.text.prompts import EVAL_STREAM, assign_prompts, prompt_strings, prompt_table
    from tarka_jax.train.data import read_corpus

    if teacher_cache:
        cache = TeacherCache(teacher_cache)
        info = cache.manifest
        texts = read_corpus(texts_files or info["splits"].get("eval", {}).get("files", []),
                            text_field, "--texts")
        mix, seed = info["prompt_mix"], info["seed"]
        cache.check("eval", texts, mix, seed)
        t_emb = np.asarray(cache.embeddings("eval"))
        prompts = cache.prompts
    else:
        from tarka_jax.recipe.teacher_cache import _JaxTeacher

        texts = read_corpus(texts_files, text_field, "--texts") if texts_files else pair_texts
        t_model = _JaxTeacher(teacher, dtype, max_seq_length)
        prompts = prompt_table(t_model.prompts)
        mix = dict(prompt_mix or {})
        names, choice = assign_prompts(len(texts), mix, seed, EVAL_STREAM)
        t_emb = _embed_split(t_model, texts, names, choice, prompts, batch_size)
    names, choice = assign_prompts(len(texts), dict(mix), seed, EVAL_STREAM)
    s_emb = np.zeros((len(texts), model.embedding_dim), np.float32)
    strings = prompt_strings(names, choice, prompts)
    for p in sorted(set(strings)):
        rows = [i for i, s in enumerate(strings) if s == p]
        s_emb[rows] = model.encode([texts[i] for i in rows], prompt=p, batch_size=batch_size)
    return {"texts": len(texts), **agreement(s_emb, t_emb, dim)}

"""One distillation run: load and check everything, then run on the training core.

:func:`prepare` reads the files and models in order of cost and raises before any compute;
:class:`Distillation` is the core's client (:class:`tarka_jax.train.loop.Client`): the
student is the trained model, the teacher (or its cache) a source, the step
:func:`tarka_jax.distill.step.make_train_step`, and the evaluation the teacher agreement
(:class:`Evaluator`) plus held-out retrieval / STS (:mod:`tarka_jax.train.heldout`).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from tarka_jax.convert import Checkpoint, open_model
from tarka_jax.distill.config import DistillConfig, DistillConfigError
from tarka_jax.distill.data import PairTokenizer, TextBatches
from tarka_jax.distill.loss import LossConfigError
from tarka_jax.distill.step import StepConfig, make_train_step
from tarka_jax.distill.surgery import resize_output
from tarka_jax.distill.teacher_cache import CacheError, TeacherCache
from tarka_jax.text.prompts import (
    EVAL_STREAM,
    TRAIN_STREAM,
    PromptMixError,
    assign_prompts,
    check_mix,
    prompt_strings,
    prompt_table,
)
from tarka_jax.text.tokenizer import TextTokenizer
from tarka_jax.train import fingerprint, heldout
from tarka_jax.train import sharding as shd
from tarka_jax.train.config import check_lengths
from tarka_jax.train.data import RECORD_SUFFIXES, check_files, read_corpus
from tarka_jax.train.loop import RunOptions, run
from tarka_jax.train.metrics import agreement
from tarka_jax.train.sharding import to_global
from tarka_jax.train.state import make_embed_fn, shard_params
from tarka_jax.train.stop import DEFAULT_GRACE_SECONDS


@dataclasses.dataclass
class Prepared:
    """What a run needs, loaded and checked; no device compute has happened yet."""

    config: DistillConfig
    student: Checkpoint
    teacher: Checkpoint | None  # None: the teacher is ``cache``
    pair: PairTokenizer
    train_texts: list[str]
    eval_texts: list[str]
    cache: TeacherCache | None = None
    train_prompts: list[str] | None = None  # per text, prepended for both models
    eval_prompts: list[str] | None = None
    pairs: tuple[list[str], list[str]] | None = None  # held-out (queries, documents)
    sts: tuple[list[str], list[str], list[float]] | None = None  # held-out STS rows

    @property
    def teacher_dim(self) -> int:
        return self.cache.dim if self.cache is not None else self.teacher.config.embedding_dim


def prepare(config: DistillConfig) -> Prepared:
    """Files, models, dims and tokenizers, checked in order of cost; raises before compute."""
    train_files = [config.resolve(p) for p in config.data.train]
    eval_files = [config.resolve(p) for p in config.data.eval]
    check_files(train_files, "data.train")
    check_files(eval_files, "data.eval")
    d = config.data
    pair_files = [config.resolve(p) for p in d.eval_pairs]
    sts_files = [config.resolve(p) for p in d.eval_sts]
    check_files(pair_files, "data.eval_pairs", RECORD_SUFFIXES)
    check_files(sts_files, "data.eval_sts", RECORD_SUFFIXES)
    student = open_model(config.resolve_model(config.model.student))
    if config.model.student_output_dim:
        s_config, s_params = resize_output(student.config, student.params,
                                           config.model.student_output_dim, config.data.seed)
        student = dataclasses.replace(student, config=s_config, params=s_params)
    cache, teacher = None, None
    if config.model.teacher_cache:
        cache = TeacherCache(config.resolve(config.model.teacher_cache))
        teacher_name, teacher_dim = config.model.teacher_cache, cache.dim
        prompts = cache.prompts
    else:
        teacher = open_model(config.resolve_model(config.model.teacher))
        teacher_name, teacher_dim = config.model.teacher, teacher.config.embedding_dim
        prompts = prompt_table(teacher.meta.prompts)
    try:
        config.loss.dims(student.config.embedding_dim, teacher_dim)
        check_mix(config.data.prompt_mix, prompts)
    except (LossConfigError, PromptMixError) as e:
        raise DistillConfigError(f"{e} [student {config.model.student}, teacher "
                                 f"{teacher_name}]") from None
    s_pos = student.config.max_position_embeddings
    t_pos = teacher.config.max_position_embeddings if teacher is not None else s_pos
    check_lengths(DistillConfigError, s_pos, f"student {config.model.student}",
                  data__max_seq_length=config.data.max_seq_length)
    check_lengths(DistillConfigError, t_pos, f"teacher {teacher_name}",
                  data__teacher_max_seq_length=config.data.teacher_max_seq_length)
    check_lengths(DistillConfigError, max(s_pos, t_pos), "either model",
                  data__buckets=config.data.buckets)
    s_tok = TextTokenizer.from_folder(student.folder, config.data.max_seq_length or None,
                                      max_position_embeddings=student.config.max_position_embeddings)
    t_tok = None
    if teacher is not None:
        t_tok = TextTokenizer.from_folder(
            teacher.folder, config.data.teacher_max_seq_length or None,
            max_position_embeddings=teacher.config.max_position_embeddings)
    pair = PairTokenizer(s_tok, t_tok, student_prompt=config.data.student_prompt,
                         teacher_prompt=config.data.teacher_prompt,
                         student_buckets=config.data.buckets, teacher_buckets=config.data.buckets)
    train_texts = read_corpus(train_files, config.data.text_field, "data.train")
    eval_texts = read_corpus(eval_files, config.data.text_field, "data.eval") if eval_files else []
    mix, seed = config.data.prompt_mix, config.data.seed
    if cache is not None:
        try:
            cache.check("train", train_texts, mix, seed)
            if eval_texts:
                cache.check("eval", eval_texts, mix, seed)
        except CacheError as e:
            raise DistillConfigError(str(e)) from None
    train_prompts = eval_prompts = None
    if mix:
        train_prompts = prompt_strings(*assign_prompts(len(train_texts), mix, seed, TRAIN_STREAM),
                                       prompts)
        eval_prompts = prompt_strings(*assign_prompts(len(eval_texts), mix, seed, EVAL_STREAM),
                                      prompts)
    pairs = (heldout.read_pairs(pair_files, d.eval_pairs_columns, d.eval_pairs_where,
                                "data.eval_pairs") if pair_files else None)
    sts = (heldout.read_sts(sts_files, d.eval_sts_columns, d.eval_sts_where, "data.eval_sts")
           if sts_files else None)
    return Prepared(config, student, teacher, pair, train_texts, eval_texts, cache,
                    train_prompts, eval_prompts, pairs, sts)


class Evaluator:
    """Held-out agreement with the teacher (teacher embeddings computed or read once).

    Reports ``eval_cosine`` and ``eval_top1`` (see :func:`tarka_jax.train.metrics.agreement`).
    """

    def __init__(self, prep: Prepared, mesh, student_sh, teacher_params, teacher_sh):
        cfg = prep.config
        self.texts = prep.eval_texts
        self.prompts = prep.eval_prompts
        self.pair = prep.pair
        self.rows = cfg.data.batch_size
        self.mesh = mesh
        s_dim, t_dim = prep.student.config.embedding_dim, prep.teacher_dim
        if cfg.loss.matryoshka_dims:
            self.dim = max(cfg.loss.matryoshka_dims)
        else:
            self.dim = s_dim if s_dim == t_dim else None  # widths differ: top-1 only
        dtype, attn = cfg.model.dtype, cfg.model.attention
        self._student = make_embed_fn(prep.student.config, dtype, attn, mesh, student_sh)
        if prep.cache is not None:
            self._teacher = np.asarray(prep.cache.embeddings("eval"), np.float32)
            return
        teacher_fn = make_embed_fn(prep.teacher.config, dtype, attn, mesh, teacher_sh)
        self._teacher = np.concatenate([
            np.asarray(teacher_fn(teacher_params, self._batch(b, p, "teacher")))
            for b, p in self._chunks()])[:len(self.texts)]

    def _chunks(self):
        for i in range(0, len(self.texts), self.rows):
            yield (self.texts[i:i + self.rows],
                   self.prompts[i:i + self.rows] if self.prompts is not None else None)

    def _batch(self, texts, prompts, which: str) -> dict:
        part = self.pair(texts, prompts)[which]
        n = self.rows // jax.process_count()
        lo = jax.process_index() * n
        sharding = shd.batch_sharding(self.mesh)
        out = {}
        for k, v in part.items():
            full = np.zeros((self.rows, v.shape[1]), np.int32)
            full[:len(v)] = v
            out[k] = to_global(full[lo:lo + n], sharding)
        return out

    def __call__(self, params) -> dict:
        s = np.concatenate([np.asarray(self._student(params, self._batch(b, p, "student")))
                            for b, p in self._chunks()])[:len(self.texts)]
        return agreement(s, self._teacher, self.dim)


def heldout_evaluator(prep: Prepared, mesh, param_sh):
    """Held-out retrieval / STS of the student as it would be exported (its own tokenizer,
    length and query/document/STS prompts) under the training mesh; None without data."""
    if prep.pairs is None and prep.sts is None:
        return None
    student = prep.student
    encoder = heldout.model_encoder(student, prep.config, mesh, param_sh)
    prompts = heldout.model_prompts(student.meta.prompts, student.meta.default_prompt_name)
    return heldout.HeldOutEvaluator(
        encoder,
        None if prep.pairs is None else (*prep.pairs, prompts["query"], prompts["document"]),
        None if prep.sts is None else (*prep.sts, prompts["sts"]))


class Distillation:
    """The training core's client for one prepared distillation run."""

    loop = "distill"
    error = DistillConfigError

    def __init__(self, prep: Prepared):
        self.prep, self.config, self.model = prep, prep.config, prep.student
        self._teacher = self._teacher_sh = self._cache_rows = None

    def rows(self) -> tuple[int, str]:
        micro = self.config.data.batch_size // self.config.optimizer.accumulation_steps
        return micro, "the micro-batch (data.batch_size / optimizer.accumulation_steps)"

    def sources(self) -> dict:
        m, prep = self.config.model, self.prep
        if prep.cache is not None:
            teacher = {"teacher_cache": {k: prep.cache.manifest[k] for k in
                                         ("teacher", "backend", "dim", "prompt_mix", "seed")}}
        else:
            teacher = {"teacher": m.teacher, "config": prep.teacher.config.to_dict()}
        return {"student": m.student, "student_output_dim": m.student_output_dim, **teacher}

    def inputs(self) -> dict:
        c, prep = self.config, self.prep
        folders = {"model.student": fingerprint.model_fingerprint(prep.student)}
        if prep.cache is not None:
            folders["model.teacher_cache"] = fingerprint.folder_fingerprint(
                c.resolve(c.model.teacher_cache), ("*",))
        else:
            folders["model.teacher"] = fingerprint.model_fingerprint(prep.teacher)
        return fingerprint.fingerprint_inputs(
            {"data.train": [c.resolve(p) for p in c.data.train]}, folders)

    def make_data(self) -> TextBatches:
        d = self.config.data
        return TextBatches(self.prep.train_texts, self.prep.pair, d.batch_size, d.seed,
                           jax.process_index(), jax.process_count(),
                           prompts=self.prep.train_prompts)

    def make_step(self, tx, schedule, mesh, state_sh):
        prep, c = self.prep, self.config
        if prep.cache is not None:
            self._teacher, self._teacher_sh = {}, {}
            self._cache_rows = prep.cache.embeddings("train")
        else:
            self._teacher, self._teacher_sh = shard_params(prep.teacher.params, mesh)
        cached = self._cache_rows is not None
        step_cfg = StepConfig(student=prep.student.config,
                              teacher=None if cached else prep.teacher.config,
                              loss=c.loss, dtype=c.model.dtype, attention=c.model.attention,
                              remat=c.model.remat,
                              accumulation_steps=c.optimizer.accumulation_steps,
                              teacher_dim=prep.teacher_dim)
        step_fn = make_train_step(step_cfg, tx, schedule, mesh, state_sh, self._teacher_sh,
                                  cached)
        teacher = self._teacher
        return lambda state, batch: step_fn(state, teacher, batch)

    def next_batch(self, data: TextBatches, mesh):
        batch_sh, cache_rows = shd.batch_sharding(mesh), self._cache_rows

        def next_batch():
            host = next(data)
            index = host.pop("index")
            tokens = int(np.count_nonzero(host["student"]["segment_ids"])) * jax.process_count()
            batch = {name: {k: to_global(v, batch_sh) for k, v in part.items()}
                     for name, part in host.items()}
            if cache_rows is not None:  # rows of the memory-mapped cache, in this host's order
                batch["teacher_embeddings"] = to_global(
                    np.asarray(cache_rows[index], np.float32), batch_sh)
            return batch, tokens

        return next_batch

    def make_evaluator(self, mesh, param_sh):
        prep = self.prep
        return heldout.chain(
            Evaluator(prep, mesh, param_sh, self._teacher, self._teacher_sh)
            if prep.eval_texts else None,
            heldout_evaluator(prep, mesh, param_sh))


def train(config: DistillConfig, workdir: str, *, max_steps: int | None = None,
          resume: bool = False, config_text: str | None = None,
          allow_config_change: bool = False,
          grace_seconds: float = DEFAULT_GRACE_SECONDS) -> dict:
    """Run (or resume) distillation in ``workdir``; returns the last logged metrics.

    Args: as :class:`tarka_jax.train.loop.RunOptions` (``max_steps`` absolute; ``resume``
    from the newest readable checkpoint; a SIGINT / SIGTERM saves the step reached and
    raises :class:`tarka_jax.train.stop.Stopped`).
    """
    return run(Distillation(prepare(config)), workdir,
               RunOptions(max_steps=max_steps, resume=resume, config_text=config_text,
                          allow_config_change=allow_config_change,
                          grace_seconds=grace_seconds))

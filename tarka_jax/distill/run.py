"""One distillation run: check everything, build the sharded state, loop, checkpoint, log."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

from tarka_jax.convert import Checkpoint, open_model
from tarka_jax.distill.config import DistillConfig, DistillConfigError
from tarka_jax.distill.data import PairTokenizer, TextBatches
from tarka_jax.distill.loss import LossConfigError
from tarka_jax.distill.step import StepConfig, make_train_step
from tarka_jax.distill.surgery import resize_output
from tarka_jax.distill.teacher_cache import CacheError, TeacherCache
from tarka_jax.runtime.distributed import barrier
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
from tarka_jax.train import checkpointing as ckpt
from tarka_jax.train import heldout, resume_check
from tarka_jax.train import sharding as shd
from tarka_jax.train.data import check_files, read_corpus
from tarka_jax.train.metrics import MetricsWriter, agreement
from tarka_jax.train.optim import make_optimizer
from tarka_jax.train.sharding import to_global
from tarka_jax.train.state import abstract_sharded_state, create_state, make_embed_fn, shard_params


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
    heldout.check_files(pair_files, "data.eval_pairs")
    heldout.check_files(sts_files, "data.eval_sts")
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


class _CachedTeacherInfo:
    """What run.json records about a cached teacher (in place of its ModelConfig)."""

    def __init__(self, cache: TeacherCache):
        self.manifest = cache.manifest

    def to_dict(self) -> dict:
        return {"teacher_cache": {k: self.manifest[k] for k in
                                  ("teacher", "backend", "dim", "prompt_mix", "seed")}}


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
        dtype, attn = cfg.model.dtype, cfg.model.attention or None
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
    cfg, student = prep.config, prep.student
    tok, buckets = heldout.eval_tokenizer(student.folder, student.config.max_position_embeddings,
                                          cfg.data.buckets)
    encoder = heldout.MeshEncoder(student.config, tok, buckets, dtype=cfg.model.dtype,
                                  attention=cfg.model.attention or None, mesh=mesh,
                                  param_sh=param_sh,
                                  rows=cfg.data.eval_batch_size or cfg.data.batch_size)
    prompts = heldout.model_prompts(student.meta.prompts, student.meta.default_prompt_name)
    return heldout.HeldOutEvaluator(
        encoder,
        None if prep.pairs is None else (*prep.pairs, prompts["query"], prompts["document"]),
        None if prep.sts is None else (*prep.sts, prompts["sts"]))


def window_mean(window: list[dict]) -> dict:
    """Mean of each metric over the steps since the last log; ``lr`` of the last step."""
    out = {k: float(np.mean([m[k] for m in window])) for k in window[-1]}
    out["lr"] = float(window[-1]["lr"])
    return out


def open_checkpoints(config: DistillConfig, workdir: str, resume: bool, *,
                      config_text: str | None = None, allow_config_change: bool = False):
    """The run's checkpoint manager, refusing a fresh start over old checkpoints or into a
    folder that is not a run folder, a resume with none, and a resume whose config changes
    the math (unless ``allow_config_change``, which records the change)."""
    if not resume:
        resume_check.check_new_run_folder(workdir, ckpt.RUN_FILE)
    # Every process checks the folder before any process writes into it (the manager makes
    # files): without this, a slower process saw process 0's first files and refused the
    # folder as "not a run folder", leaving process 0 stuck in its collectives.
    barrier("tarka-jax: run folder checked")
    mngr = ckpt.manager(workdir, keep=config.checkpoint.keep,
                        async_save=config.checkpoint.async_save)
    latest = mngr.latest_step()
    if not resume and latest is not None:
        mngr.close()
        raise ckpt.RunFolderError(
            f"{workdir} already holds checkpoints (latest step {latest}); pass "
            "--resume to continue or choose a new --workdir")
    if resume and latest is None:
        mngr.close()
        raise ckpt.RunFolderError(f"--resume: no checkpoint in {workdir}")
    if resume:  # refuses (or records) a config that differs from run.json's
        try:
            resume_check.check_resume(workdir, ckpt.read_run_file(workdir)["config"],
                                      config.to_dict(), step=latest, config_text=config_text,
                                      allow_config_change=allow_config_change)
        except Exception:
            mngr.close()
            raise
    return mngr


def _initial_state(prep: Prepared, tx, mesh, mngr, data: TextBatches, resume: bool, workdir):
    """(sharded state, its shardings): restored (with the data position) or created."""
    if resume:
        abstract, state_sh = abstract_sharded_state(prep.student.params, tx, mesh)
        state, position = ckpt.restore(mngr, None, abstract)
        data.set_state(position)
        return state, state_sh
    ckpt.clear_run(workdir)
    return create_state(prep.student.params, tx, mesh)


def _teacher_side(prep: Prepared, mesh):
    """(teacher params, their shardings, the memory-mapped cache rows or None)."""
    if prep.cache is not None:
        return {}, {}, prep.cache.embeddings("train")
    params, shardings = shard_params(prep.teacher.params, mesh)
    return params, shardings, None


def train(config: DistillConfig, workdir: str, *, max_steps: int | None = None,
          resume: bool = False, config_text: str | None = None,
          allow_config_change: bool = False) -> dict[str, Any]:
    """Run (or resume) distillation in ``workdir``; returns the last logged metrics.

    Args:
      max_steps: stop once the state reaches this step (absolute; the learning-rate
        schedule still spans ``train.steps``). None = ``train.steps``.
      resume: continue from the latest checkpoint in ``workdir`` (state and data
        position); without it a ``workdir`` that holds checkpoints is refused.
    """
    prep = prepare(config)
    workdir = os.path.abspath(workdir)
    end = config.train.steps if max_steps is None else min(max_steps, config.train.steps)
    mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp)
    micro = config.data.batch_size // config.optimizer.accumulation_steps
    if micro % mesh.size:
        raise DistillConfigError(
            f"the micro-batch (data.batch_size / optimizer.accumulation_steps = {micro}) must "
            f"split evenly over the {mesh.size} devices of the mesh")
    mngr = open_checkpoints(config, workdir, resume, config_text=config_text,
                             allow_config_change=allow_config_change)
    tx, schedule = make_optimizer(config.optimizer, config.train.steps)
    data = TextBatches(prep.train_texts, prep.pair, config.data.batch_size, config.data.seed,
                       jax.process_index(), jax.process_count(), prompts=prep.train_prompts)
    state, state_sh = _initial_state(prep, tx, mesh, mngr, data, resume, workdir)
    if not resume:  # a resume keeps run.json / config.toml as the run started
        ckpt.write_run_files(workdir, config_dict=config.to_dict(), config_text=config_text,
                             student=prep.student.config,
                             teacher=(prep.teacher.config if prep.teacher is not None
                                      else _CachedTeacherInfo(prep.cache)),
                             student_meta=prep.student.meta,
                             student_tokenizer_folder=prep.student.folder)
    teacher_params, teacher_sh, cache_rows = _teacher_side(prep, mesh)
    cached = cache_rows is not None
    step_cfg = StepConfig(student=prep.student.config,
                          teacher=None if cached else prep.teacher.config,
                          loss=config.loss, dtype=config.model.dtype,
                          attention=config.model.attention or None, remat=config.model.remat,
                          accumulation_steps=config.optimizer.accumulation_steps,
                          teacher_dim=prep.teacher_dim)
    step_fn = make_train_step(step_cfg, tx, schedule, mesh, state_sh, teacher_sh, cached)
    evaluator = heldout.chain(
        Evaluator(prep, mesh, state_sh["params"], teacher_params, teacher_sh)
        if prep.eval_texts else None,
        heldout_evaluator(prep, mesh, state_sh["params"]))
    writer = MetricsWriter(workdir, total_steps=end,
                           start_step=int(jax.device_get(state["step"])),
                           tensorboard=config.logging.tensorboard,
                           progress=config.logging.progress)
    try:
        return _loop(config, state, step_fn, teacher_params, data, cache_rows, mesh, end,
                     evaluator, writer, mngr)
    finally:
        mngr.close()
        writer.close()


def _loop(config: DistillConfig, state, step_fn, teacher_params, data: TextBatches, cache_rows,
          mesh, end: int, evaluator, writer: MetricsWriter, mngr) -> dict[str, Any]:
    """Distillation's steps: global batches (teacher-cache rows added) through ``step_fn``."""
    batch_sh = shd.batch_sharding(mesh)

    def next_batch():
        host = next(data)
        index = host.pop("index")
        tokens = int(np.count_nonzero(host["student"]["segment_ids"])) * jax.process_count()
        batch = {name: {k: to_global(v, batch_sh) for k, v in part.items()}
                 for name, part in host.items()}
        if cache_rows is not None:  # rows of the memory-mapped cache, in this host's order
            batch["teacher_embeddings"] = to_global(np.asarray(cache_rows[index], np.float32),
                                                  batch_sh)
        return batch, tokens

    return train_loop(config, state, lambda st, b: step_fn(st, teacher_params, b), next_batch,
                      data, end, evaluator, writer, mngr)


def train_loop(config, state, step, next_batch, data, end: int, evaluator,
               writer: MetricsWriter, mngr) -> dict[str, Any]:
    """Steps until ``end`` -- batch, step, log (windowed means), evaluate, checkpoint -- for
    every loop on this core (distillation, fine-tuning).

    Args:
      config: has ``train.log_every`` / ``eval_every`` and ``checkpoint.every``.
      step: ``(state, global batch) -> (state, metrics)``, the jitted step.
      next_batch: ``() -> (global batch, tokens in it over all processes)``.
      data: the iterator whose ``epoch`` is logged and ``get_state()`` checkpointed.
      evaluator: None or ``params -> metrics`` (also run at step 0 of a fresh run).
    """
    step_no = int(jax.device_get(state["step"]))
    last: dict[str, Any] = {}
    if evaluator is not None and step_no == 0:
        last = writer.write(0, evaluator(state["params"]))
    window: list[dict] = []
    tokens, t0 = 0, time.perf_counter()
    while step_no < end:
        batch, n_tokens = next_batch()
        tokens += n_tokens
        state, metrics = step(state, batch)
        window.append(metrics)
        step_no += 1
        writer.advance()
        do_eval = evaluator is not None and (
            step_no == end or (config.train.eval_every and step_no % config.train.eval_every == 0))
        if step_no % config.train.log_every == 0 or step_no == end or do_eval:
            metrics = window_mean(jax.device_get(window))
            window = []
            metrics["tokens_per_s"] = tokens / max(time.perf_counter() - t0, 1e-9)
            metrics["epoch"] = data.epoch
            if do_eval:
                metrics.update(evaluator(state["params"]))
            last = writer.write(step_no, metrics)
            tokens, t0 = 0, time.perf_counter()
        if step_no % config.checkpoint.every == 0 or step_no == end:
            ckpt.save(mngr, step_no, state, data.get_state())
    mngr.wait_until_finished()
    return {"step": step_no, **last}

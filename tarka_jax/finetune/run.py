"""One fine-tuning run: check everything, build the sharded state, loop, evaluate, checkpoint.

The run folder is a distillation run folder (:mod:`tarka_jax.train.checkpointing`):
``run.json`` (this run's config under ``"config"``, the model's ModelConfig under
``"student"``), ``student/`` (tokenizer + sentence-transformers metadata),
``checkpoints/<step>/`` (orbax: state + data position) and ``metrics.jsonl``, so
``python convert/flax_to_hf.py RUN_DIR OUT [--step N]`` exports any saved step.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from tarka_jax.convert import Checkpoint, open_model
from tarka_jax.distill.run import open_checkpoints, train_loop
from tarka_jax.finetune.config import FinetuneConfig, FinetuneConfigError
from tarka_jax.finetune.data import ColumnTokenizer, PairBatches, read_rows
from tarka_jax.finetune.loss import ContrastiveLossError
from tarka_jax.finetune.step import FinetuneStepConfig, make_finetune_step
from tarka_jax.text.tokenizer import TextTokenizer
from tarka_jax.train import checkpointing as ckpt
from tarka_jax.train import heldout
from tarka_jax.train import sharding as shd
from tarka_jax.train.metrics import MetricsWriter
from tarka_jax.train.optim import make_optimizer
from tarka_jax.train.sharding import to_global
from tarka_jax.train.state import abstract_sharded_state, create_state


@dataclasses.dataclass
class Prepared:
    """What a run needs, loaded and checked; no device compute has happened yet."""

    config: FinetuneConfig
    model: Checkpoint
    tokenize: ColumnTokenizer
    train_rows: list[tuple[str, ...]]
    eval_rows: list[tuple[str, ...]]
    prompts: list[str]  # per column ("" = none)
    eval_tokenizer: TextTokenizer  # the model's own max_seq_length: as the exported model
    eval_buckets: tuple[int, ...]
    sts: tuple[list[str], list[str], list[float]] | None = None  # held-out STS rows


def column_prompts(config: FinetuneConfig, prompts: dict[str, str]) -> list[str]:
    """The prompt string of each data column ("" = none); names must be the model's."""
    out = []
    for column in config.data.columns:
        if column in config.data.prompt_names:
            name = config.data.prompt_names[column]
            if name not in prompts:
                raise FinetuneConfigError(
                    f"data.prompt_names.{column} = {name!r} is not a prompt of model "
                    f"{config.model.model} (its prompts: {sorted(prompts) or 'none'})")
            out.append(prompts[name])
        else:
            out.append(config.data.prompts.get(column, ""))
    return out


def prepare(config: FinetuneConfig) -> Prepared:
    """Files, model, dims, prompts and rows, checked in order of cost; raises before compute."""
    d = config.data
    train_files = [config.resolve(p) for p in d.train]
    eval_files = [config.resolve(p) for p in d.eval]
    sts_files = [config.resolve(p) for p in d.eval_sts]
    heldout.check_files(train_files, "data.train")
    heldout.check_files(eval_files, "data.eval")
    heldout.check_files(sts_files, "data.eval_sts")
    model = open_model(config.resolve_model(config.model.model))
    try:
        config.loss.dims_and_weights(model.config.embedding_dim)
    except ContrastiveLossError as e:
        raise FinetuneConfigError(f"{e} [model {config.model.model}]") from None
    prompts = column_prompts(config, model.meta.prompts)
    tok = TextTokenizer.from_folder(model.folder, d.max_seq_length or None,
                                    max_position_embeddings=model.config.max_position_embeddings)
    # data.max_seq_length truncates training texts only; evaluation embeds as the model
    # (and the exported model) does, with its own length.
    eval_tok, eval_buckets = heldout.eval_tokenizer(model.folder,
                                                    model.config.max_position_embeddings,
                                                    d.buckets)
    train_rows = read_rows(train_files, d.columns, d.train_where, "data.train")
    eval_rows = (read_rows(eval_files, d.columns[:2], d.eval_where, "data.eval")
                 if eval_files else [])
    sts = (heldout.read_sts(sts_files, d.eval_sts_columns, d.eval_sts_where, "data.eval_sts")
           if sts_files else None)
    return Prepared(config, model, ColumnTokenizer(tok, prompts, d.buckets), train_rows,
                    eval_rows, prompts, eval_tok, eval_buckets, sts)


def make_evaluator(prep: Prepared, mesh, param_sh):
    """Held-out retrieval (every held-out positive a candidate for every held-out anchor,
    each column with its training prompt) and STS (the model's STS prompt as
    ``tarka_jax.evaluation.scores.evaluate_sts``) under the training mesh; None without eval data.

    Logs ``eval_mrr`` (full MRR, ties against the model: the BENCHMARKS figure),
    ``eval_ndcg@10``, ``eval_mrr@10``, ``eval_recall@1``, ``eval_recall@10`` and
    ``eval_sts_spearman`` (:mod:`tarka_jax.train.heldout`).
    """
    if not prep.eval_rows and prep.sts is None:
        return None
    cfg = prep.config
    encoder = heldout.MeshEncoder(prep.model.config, prep.eval_tokenizer, prep.eval_buckets,
                                  dtype=cfg.model.dtype, attention=cfg.model.attention or None,
                                  mesh=mesh, param_sh=param_sh,
                                  rows=cfg.data.eval_batch_size or cfg.data.batch_size)
    retrieval = None
    if prep.eval_rows:
        retrieval = ([r[0] for r in prep.eval_rows], [r[1] for r in prep.eval_rows],
                     prep.prompts[0], prep.prompts[1])
    sts = None
    if prep.sts is not None:
        sts = (*prep.sts, heldout.model_prompts(prep.model.meta.prompts,
                                                prep.model.meta.default_prompt_name)["sts"])
    return heldout.HeldOutEvaluator(encoder, retrieval, sts)


class _FinetuneInfo:
    """What run.json records in the place of a distillation teacher."""

    def __init__(self, model: str):
        self.model = model

    def to_dict(self) -> dict:
        return {"finetune": {"model": self.model}}


def train(config: FinetuneConfig, workdir: str, *, max_steps: int | None = None,
          resume: bool = False, allow_config_change: bool = False,
          config_text: str | None = None) -> dict[str, Any]:
    """Run (or resume) fine-tuning in ``workdir``; returns the last logged metrics.

    Args:
      max_steps: stop once the state reaches this step (absolute; the learning-rate
        schedule still spans ``train.steps``). None = ``train.steps``.
      resume: continue from the latest checkpoint (state and data position); a
        changed config is refused unless ``allow_config_change``.
    """
    prep = prepare(config)
    workdir = os.path.abspath(workdir)
    end = config.train.steps if max_steps is None else min(max_steps, config.train.steps)
    mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp)
    rows = config.loss.mini_batch_size or config.data.batch_size
    if rows % mesh.size:
        raise FinetuneConfigError(
            f"the rows embedded at once (loss.mini_batch_size, else data.batch_size: {rows}) "
            f"must split evenly over the {mesh.size} devices of the mesh")
    # The same run-folder rules as distillation: no fresh start over checkpoints, a
    # resume whose config changes the math refused unless allowed (then recorded).
    mngr = open_checkpoints(config, workdir, resume, config_text=config_text,
                             allow_config_change=allow_config_change)
    tx, schedule = make_optimizer(config.optimizer, config.train.steps)
    data = PairBatches(prep.train_rows, prep.tokenize, config.data.batch_size, config.data.seed,
                       jax.process_index(), jax.process_count())
    if resume:
        abstract, state_sh = abstract_sharded_state(prep.model.params, tx, mesh)
        state, position = ckpt.restore(mngr, None, abstract)
        data.set_state(position)
    else:
        ckpt.clear_run(workdir)
        state, state_sh = create_state(prep.model.params, tx, mesh)
        ckpt.write_run_files(workdir, config_dict=config.to_dict(), config_text=config_text,
                             student=prep.model.config,
                             teacher=_FinetuneInfo(config.model.model),
                             student_meta=prep.model.meta,
                             student_tokenizer_folder=prep.model.folder)
    step_cfg = FinetuneStepConfig(model=prep.model.config, loss=config.loss,
                                  dtype=config.model.dtype,
                                  attention=config.model.attention or None,
                                  remat=config.model.remat)
    columns = len(config.data.columns)
    step_fn = make_finetune_step(step_cfg, tx, schedule, mesh, state_sh, columns)
    evaluator = make_evaluator(prep, mesh, state_sh["params"])
    batch_sh = shd.batch_sharding(mesh)

    step = int(jax.device_get(state["step"]))
    writer = MetricsWriter(workdir, total_steps=end, start_step=step,
                           tensorboard=config.logging.tensorboard,
                           progress=config.logging.progress)

    def next_batch():
        host = next(data)  # one dict of int32 arrays per column
        tokens = sum(int(np.count_nonzero(c["segment_ids"])) for c in host) * jax.process_count()
        return [{k: to_global(v, batch_sh) for k, v in c.items()} for c in host], tokens

    try:
        return train_loop(config, state, step_fn, next_batch, data, end, evaluator, writer, mngr)
    finally:
        mngr.close()
        writer.close()

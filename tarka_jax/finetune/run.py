"""One fine-tuning run: load and check everything, then run on the training core.

:func:`prepare` reads the pair files and the model in order of cost and raises before any
compute; :class:`Finetuning` is the core's client (:class:`tarka_jax.train.loop.Client`).
The run folder is the core's (:mod:`tarka_jax.train.run_files`): run.json (``loop =
"finetune"``, the model's ModelConfig under ``"model"``), ``student/`` (tokenizer +
sentence-transformers metadata), ``checkpoints/<step>/`` and ``metrics.jsonl``, so
``python convert/flax_to_hf.py RUN_DIR OUT [--step N]`` exports any saved step.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from tarka_jax.convert import Checkpoint, open_model
from tarka_jax.finetune.config import FinetuneConfig, FinetuneConfigError
from tarka_jax.finetune.data import ColumnTokenizer, PairBatches, read_rows
from tarka_jax.finetune.loss import ContrastiveLossError
from tarka_jax.finetune.step import FinetuneStepConfig, make_finetune_step
from tarka_jax.text.tokenizer import TextTokenizer
from tarka_jax.train import fingerprint, heldout
from tarka_jax.train import sharding as shd
from tarka_jax.train.config import check_lengths
from tarka_jax.train.data import RECORD_SUFFIXES, check_files
from tarka_jax.train.loop import RunOptions, run
from tarka_jax.train.sharding import to_global
from tarka_jax.train.stop import DEFAULT_GRACE_SECONDS


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
    for files, key in ((train_files, "data.train"), (eval_files, "data.eval"),
                       (sts_files, "data.eval_sts")):
        check_files(files, key, RECORD_SUFFIXES)
    model = open_model(config.resolve_model(config.model.model))
    try:
        config.loss.dims_and_weights(model.config.embedding_dim)
    except ContrastiveLossError as e:
        raise FinetuneConfigError(f"{e} [model {config.model.model}]") from None
    prompts = column_prompts(config, model.meta.prompts)
    check_lengths(FinetuneConfigError, model.config.max_position_embeddings,
                  f"model {config.model.model}", data__max_seq_length=d.max_seq_length,
                  data__buckets=d.buckets)
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
    encoder = heldout.model_encoder(prep.model, prep.config, mesh, param_sh,
                                    (prep.eval_tokenizer, prep.eval_buckets))
    retrieval = None
    if prep.eval_rows:
        retrieval = ([r[0] for r in prep.eval_rows], [r[1] for r in prep.eval_rows],
                     prep.prompts[0], prep.prompts[1])
    sts = None
    if prep.sts is not None:
        sts = (*prep.sts, heldout.model_prompts(prep.model.meta.prompts,
                                                prep.model.meta.default_prompt_name)["sts"])
    return heldout.HeldOutEvaluator(encoder, retrieval, sts)


class Finetuning:
    """The training core's client for one prepared fine-tuning run."""

    loop = "finetune"
    error = FinetuneConfigError

    def __init__(self, prep: Prepared):
        self.prep, self.config, self.model = prep, prep.config, prep.model

    def rows(self) -> tuple[int, str]:
        rows = self.config.loss.mini_batch_size or self.config.data.batch_size
        return rows, "the rows embedded at once (loss.mini_batch_size, else data.batch_size)"

    def sources(self) -> dict:
        return {"model": self.config.model.model}

    def inputs(self) -> dict:
        c = self.config
        return fingerprint.fingerprint_inputs(
            {"data.train": [c.resolve(p) for p in c.data.train]},
            {"model.model": fingerprint.model_fingerprint(self.prep.model)})

    def make_data(self) -> PairBatches:
        d = self.config.data
        return PairBatches(self.prep.train_rows, self.prep.tokenize, d.batch_size, d.seed,
                           jax.process_index(), jax.process_count())

    def make_step(self, tx, schedule, mesh, state_sh):
        c = self.config
        step_cfg = FinetuneStepConfig(model=self.model.config, loss=c.loss, dtype=c.model.dtype,
                                      attention=c.model.attention, remat=c.model.remat)
        return make_finetune_step(step_cfg, tx, schedule, mesh, state_sh, len(c.data.columns))

    def next_batch(self, data: PairBatches, mesh):
        batch_sh = shd.batch_sharding(mesh)

        def next_batch():
            host = next(data)  # one dict of int32 arrays per column
            tokens = sum(int(np.count_nonzero(c["segment_ids"])) for c in host)
            return ([{k: to_global(v, batch_sh) for k, v in c.items()} for c in host],
                    tokens * jax.process_count())

        return next_batch

    def make_evaluator(self, mesh, param_sh):
        return make_evaluator(self.prep, mesh, param_sh)


def train(config: FinetuneConfig, workdir: str, *, max_steps: int | None = None,
          resume: bool = False, allow_config_change: bool = False,
          config_text: str | None = None,
          grace_seconds: float = DEFAULT_GRACE_SECONDS) -> dict:
    """Run (or resume) fine-tuning in ``workdir``; returns the last logged metrics.

    Args: as :class:`tarka_jax.train.loop.RunOptions` (``max_steps`` absolute; ``resume``
    from the newest readable checkpoint, a changed config or input refused unless
    ``allow_config_change``; a SIGINT / SIGTERM saves the step reached and raises
    :class:`tarka_jax.train.stop.Stopped`).
    """
    return run(Finetuning(prepare(config)), workdir,
               RunOptions(max_steps=max_steps, resume=resume, config_text=config_text,
                          allow_config_change=allow_config_change,
                          grace_seconds=grace_seconds))

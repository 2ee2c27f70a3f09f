"""The fine-tuning run's TOML schema: one dataclass per table, checked before any compute.

Example (``examples/finetune_demo.toml`` is a runnable one)::

    [model]
    model = "builtin:demo-mini"          # folder, hub id, builtin:NAME: the starting model
    dtype = "float32"                    # compute dtype; params stay float32
    remat = false
    attention = ""

    [data]
    train = ["pairs.jsonl.gz"]           # .jsonl / .jsonl.gz / .parquet, relative to this file
    eval = ["pairs.jsonl.gz"]            # optional: held-out pairs (retrieval)
    columns = ["summary", "body"]        # anchor, positive, then any hard negatives
    train_where = {split = "train"}      # keep rows whose fields equal these values
    eval_where = {split = "heldout"}     # held-out retrieval: nDCG@10, MRR, recall@k
    eval_sts = []                        # optional: STS rows, eval_sts_columns / eval_sts_where
    prompt_names = {summary = "query", body = "document"}  # names in the model's prompts
    prompts = {}                         # or literal prompt strings per column
    batch_size = 64                      # global batch; no text twice in a batch
    seed = 0
    max_seq_length = 0                   # 0 = the model's own
    buckets = []                         # padded lengths; [] = powers of two from 16

    [loss]                               # see ContrastiveLossConfig
    scale = 20.0
    mini_batch_size = 0                  # > 0: cached (GradCache) mini-batches
    matryoshka_dims = []

    [optimizer]                          # the distillation loop's OptimizerConfig
    learning_rate = 2e-5
    freeze = []                          # regexes of param paths kept fixed, e.g.
                                         # ["encoder/embed_tokens"]

    [mesh] / [train] / [checkpoint] / [logging]   # as for distillation

An unknown key or a missing required one is an error naming it.
"""

from __future__ import annotations

import dataclasses
import os

from tarka_jax.distill.config import (
    CheckpointSection,
    DistillConfig,
    DistillConfigError,
    LoggingSection,
    MeshSection,
    TrainSection,
    check_eval_columns,
    read_toml,
)
from tarka_jax.distill.config import _build as build_table
from tarka_jax.finetune.loss import ContrastiveLossConfig
from tarka_jax.train.optim import OptimizerConfig


class FinetuneConfigError(DistillConfigError):
    """A fine-tuning config that cannot run, naming the offending key."""


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The model to fine-tune and how it computes."""

    model: str
    dtype: str = "float32"
    remat: bool = False
    attention: str = ""


@dataclasses.dataclass(frozen=True)
class DataSection:
    """Pair files, their columns, prompts and batching."""

    train: tuple[str, ...]
    columns: tuple[str, ...] = ("anchor", "positive")
    eval: tuple[str, ...] = ()
    train_where: dict[str, object] = dataclasses.field(default_factory=dict)
    eval_where: dict[str, object] = dataclasses.field(default_factory=dict)
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    prompt_names: dict[str, str] = dataclasses.field(default_factory=dict)
    batch_size: int = 32
    seed: int = 0
    max_seq_length: int = 0
    buckets: tuple[int, ...] = ()
    eval_batch_size: int = 0  # rows per eval forward pass; 0 = batch_size
    # Held-out STS rows (tarka_jax.train.heldout): two texts and a gold score, the model's
    # STS prompt (else its default one), as tarka_jax.evaluation.scores.evaluate_sts.
    eval_sts: tuple[str, ...] = ()
    eval_sts_columns: tuple[str, ...] = ("sentence1", "sentence2", "score")
    eval_sts_where: dict[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """The whole run. ``base_dir`` (not a TOML key) is the folder relative paths start from."""

    model: ModelSection
    data: DataSection
    train: TrainSection
    loss: ContrastiveLossConfig = dataclasses.field(default_factory=ContrastiveLossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    logging: LoggingSection = dataclasses.field(default_factory=LoggingSection)
    base_dir: str = "."

    # Same path rules and serialisation as the distillation config.
    resolve = DistillConfig.resolve
    resolve_model = DistillConfig.resolve_model
    to_dict = DistillConfig.to_dict


def parse_config(data: dict, base_dir: str = ".") -> FinetuneConfig:
    """A checked FinetuneConfig from a parsed TOML dict."""
    try:
        config = build_table(FinetuneConfig, data, "")
    except DistillConfigError as e:
        raise FinetuneConfigError(str(e)) from None
    config = dataclasses.replace(config, base_dir=os.path.abspath(base_dir))
    _check(config)
    return config


def load_config(path: str) -> FinetuneConfig:
    """Read and check a TOML file (no model or data is touched yet)."""
    return parse_config(*read_toml(path, FinetuneConfigError))


def _check(c: FinetuneConfig) -> None:
    """Cheap consistency checks; file and model checks happen in ``run.prepare``."""
    d = c.data
    check_eval_columns(d, FinetuneConfigError)
    if not d.train:
        raise FinetuneConfigError("data.train lists no files")
    if len(d.columns) < 2 or len(set(d.columns)) != len(d.columns):
        raise FinetuneConfigError(f"data.columns needs distinct anchor and positive columns "
                                  f"(then any negatives), got {list(d.columns)}")
    for key in ("prompts", "prompt_names"):
        unknown = sorted(set(getattr(d, key)) - set(d.columns))
        if unknown:
            raise FinetuneConfigError(f"data.{key} names {unknown}, not in data.columns "
                                      f"{list(d.columns)}")
    both = sorted(set(d.prompts) & set(d.prompt_names))
    if both:
        raise FinetuneConfigError(f"data.prompts and data.prompt_names both set column(s) {both}")
    if d.batch_size < 2:
        raise FinetuneConfigError(f"data.batch_size must be >= 2 (in-batch negatives), got "
                                  f"{d.batch_size}")
    mini = c.loss.mini_batch_size
    if mini and (mini > d.batch_size or d.batch_size % mini):
        raise FinetuneConfigError(f"loss.mini_batch_size ({mini}) must divide data.batch_size "
                                  f"({d.batch_size})")
    if c.optimizer.accumulation_steps != 1:
        raise FinetuneConfigError(
            "optimizer.accumulation_steps must be 1 for contrastive fine-tuning: accumulating "
            "micro-batches would shrink the in-batch negatives; use loss.mini_batch_size "
            "(GradCache: same loss and gradients as the whole batch, one mini-batch's memory)")
    if c.model.dtype not in ("float32", "bfloat16"):
        raise FinetuneConfigError(f"model.dtype must be 'float32' or 'bfloat16', got "
                                  f"{c.model.dtype!r}")
    if c.train.steps <= 0:
        raise FinetuneConfigError(f"train.steps must be > 0, got {c.train.steps}")
    if c.train.log_every <= 0:
        raise FinetuneConfigError("train.log_every must be > 0")
    if c.checkpoint.every <= 0 or c.checkpoint.keep <= 0:
        raise FinetuneConfigError("checkpoint.every and checkpoint.keep must be > 0")
    if any(x <= 0 for x in d.buckets) or d.max_seq_length < 0 or d.eval_batch_size < 0:
        raise FinetuneConfigError("data.buckets must be positive and data.max_seq_length, "
                                  "data.eval_batch_size >= 0")

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

    [optimizer]                          # tarka_jax.train.optim.OptimizerConfig
    learning_rate = 2e-5
    freeze = []                          # regexes of param paths kept fixed, e.g.
                                         # ["encoder/embed_tokens"]

    [mesh] / [train] / [checkpoint] / [logging]   # tarka_jax.train.config, as for distillation

An unknown key or a missing required one is an error naming it. The tables and fields both
loops share, and the builder, are :mod:`tarka_jax.train.config`'s; this module adds
fine-tuning's own.
"""

from __future__ import annotations

import dataclasses

from tarka_jax.finetune.loss import ContrastiveLossConfig
from tarka_jax.train import config as core
from tarka_jax.train.config import DataFields, ModelFields, RunConfig


class FinetuneConfigError(core.TrainConfigError):
    """A fine-tuning config that cannot run, naming the offending key."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSection(ModelFields):
    """The model to fine-tune; how it computes: ModelFields."""

    model: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSection(DataFields):
    """Pair files' columns, filters and prompts; files and batching: DataFields."""

    columns: tuple[str, ...] = ("anchor", "positive")
    train_where: dict[str, object] = dataclasses.field(default_factory=dict)
    eval_where: dict[str, object] = dataclasses.field(default_factory=dict)
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    prompt_names: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig(RunConfig):
    """The whole run: the shared tables (RunConfig) plus model, data and loss."""

    model: ModelSection
    data: DataSection
    loss: ContrastiveLossConfig = dataclasses.field(default_factory=ContrastiveLossConfig)


def parse_config(data: dict, base_dir: str = ".") -> FinetuneConfig:
    """A checked FinetuneConfig from a parsed TOML dict."""
    config = core.parse(FinetuneConfig, data, base_dir, FinetuneConfigError)
    _check(config)
    return config


def load_config(path: str) -> FinetuneConfig:
    """Read and check a TOML file (no model or data is touched yet)."""
    return parse_config(*core.read_toml(path, FinetuneConfigError))


def _check(c: FinetuneConfig) -> None:
    """Fine-tuning's own checks (the shared ones: :func:`tarka_jax.train.config.check_common`);
    file and model checks happen in ``run.prepare``."""
    d = c.data
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

"""The distillation run's TOML schema: one dataclass per table, checked before any compute.

Example (``examples/distill_tiny.toml`` is a runnable one)::

    [model]
    teacher = "google/embeddinggemma-300m"   # folder or hub id (our architecture), or:
    # teacher_cache = "cache_dir"            # `tarka-jax cache-teacher` output instead
    student = "path/to/student"              # folder or hub id: the initial student
    student_output_dim = 0                   # >0: replace the last Dense to this width
    dtype = "bfloat16"                       # compute dtype; params stay float32
    remat = false                            # recompute each layer in the backward pass
    attention = ""                           # attention implementation ("" = best)

    [data]
    train = ["corpus.txt", "more.jsonl", "shard.parquet"]   # relative to this file
    eval = ["heldout.txt"]                   # optional: held-out cosine to the teacher
    eval_pairs = ["pairs.jsonl.gz"]          # optional: held-out retrieval (nDCG@10, MRR, ...)
    eval_pairs_columns = ["query", "document"]
    eval_pairs_where = {split = "heldout"}   # keep rows whose fields equal these values
    eval_sts = ["sts.jsonl"]                 # optional: held-out STS (Spearman)
    eval_sts_columns = ["sentence1", "sentence2", "score"]
    text_field = "text"                      # .jsonl / .parquet field
    batch_size = 64                          # global batch (all hosts, all micro-batches)
    seed = 0                                 # shuffle seed (order per epoch)
    max_seq_length = 0                       # 0 = the student's own; teacher: teacher_max_seq_length
    buckets = []                             # padded lengths; [] = powers of two from 16

    [data.prompt_mix]                        # optional: per-text task prompt, same for both
    none = 2                                 # models (weights; names: the teacher's prompts)
    query = 1
    document = 1

    [loss]
    cosine = 1.0
    mse = 0.0
    kl = 1.0
    temperature = 0.05
    matryoshka_dims = []

    [optimizer]
    learning_rate = 1e-4
    ...                                      # see OptimizerConfig

    [mesh]
    data = -1                                # -1 = all devices left over
    fsdp = 1

    [train]
    steps = 1000
    log_every = 10
    eval_every = 100

    [checkpoint]
    every = 100
    keep = 3

An unknown key or a missing required one is an error naming it (``loss.kll``).
Relative data paths resolve against the TOML file's folder. The tables and fields both
loops share, and the builder, are :mod:`tarka_jax.train.config`'s; this module adds the
distillation's own.
"""

from __future__ import annotations

import dataclasses

from tarka_jax.distill.loss import LossConfig
from tarka_jax.train import config as core
from tarka_jax.train.config import DataFields, ModelFields, RunConfig

MAX_OUTPUT_DIM = 1 << 16  # a new Dense is [hidden, dim]: refuse absurd widths before allocating


class DistillConfigError(core.TrainConfigError):
    """A distillation config that cannot run, naming the offending key."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSection(ModelFields):
    """Teacher and student models (folders or hub ids); how they compute: ModelFields."""

    student: str
    teacher: str = ""
    teacher_cache: str = ""  # a cache folder used instead of a teacher model
    student_output_dim: int = 0  # >0: replace the student's last Dense layer to this width


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSection(DataFields):
    """Raw-text corpus, prompts and held-out pairs; files and batching: DataFields."""

    text_field: str = "text"
    teacher_max_seq_length: int = 0
    student_prompt: str = ""
    teacher_prompt: str = ""
    # name -> weight; "none" = no prompt. Each text draws one (seeded), the same for both models.
    prompt_mix: dict[str, float] = dataclasses.field(default_factory=dict)
    # Held-out retrieval pairs (tarka_jax.train.heldout), with the student's prompts.
    eval_pairs: tuple[str, ...] = ()
    eval_pairs_columns: tuple[str, ...] = ("query", "document")
    eval_pairs_where: dict[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillConfig(RunConfig):
    """The whole run: the shared tables (RunConfig) plus model, data and loss."""

    model: ModelSection
    data: DataSection
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)


def parse_config(data: dict, base_dir: str = ".") -> DistillConfig:
    """A checked DistillConfig from a parsed TOML dict."""
    config = core.parse(DistillConfig, data, base_dir, DistillConfigError)
    _check(config)
    return config


def load_config(path: str) -> DistillConfig:
    """Read and check a TOML file (no model or data is touched yet)."""
    return parse_config(*core.read_toml(path, DistillConfigError))


def _check(c: DistillConfig) -> None:
    """Distillation's own checks (the shared ones: :func:`tarka_jax.train.config.check_common`);
    file and model checks happen in ``run.prepare``."""
    if bool(c.model.teacher) == bool(c.model.teacher_cache):
        raise DistillConfigError("set exactly one of model.teacher (a model) and "
                                 "model.teacher_cache (a `tarka-jax cache-teacher` folder)")
    if not 0 <= c.model.student_output_dim <= MAX_OUTPUT_DIM or c.data.teacher_max_seq_length < 0:
        raise DistillConfigError(f"model.student_output_dim must be in 0..{MAX_OUTPUT_DIM} and "
                                 "data.teacher_max_seq_length >= 0")
    if c.data.prompt_mix:
        if c.data.student_prompt or c.data.teacher_prompt:
            raise DistillConfigError("data.prompt_mix replaces data.student_prompt / "
                                     "data.teacher_prompt: set one or the other")
        if any(w < 0 for w in c.data.prompt_mix.values()) or sum(c.data.prompt_mix.values()) <= 0:
            raise DistillConfigError(f"data.prompt_mix weights must be >= 0 with a positive "
                                     f"sum, got {c.data.prompt_mix}")
    if c.model.teacher_cache and (c.data.student_prompt or c.data.teacher_prompt):
        raise DistillConfigError("with model.teacher_cache, prompts come from the cache "
                                 "(data.prompt_mix); data.student_prompt / teacher_prompt "
                                 "are not supported")
    b, a = c.data.batch_size, c.optimizer.accumulation_steps
    if b <= 0 or b % a:
        raise DistillConfigError(f"data.batch_size ({b}) must be a positive multiple of "
                                 f"optimizer.accumulation_steps ({a})")
    if c.loss.kl > 0 and b // a < 2:
        raise DistillConfigError("loss.kl compares texts within a micro-batch: "
                                 "data.batch_size / optimizer.accumulation_steps must be >= 2")

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
Relative data paths resolve against the TOML file's folder.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from typing import Any

from tarka_jax.distill.loss import LossConfig
from tarka_jax.errors import TarkaError
from tarka_jax.train.optim import OptimizerConfig

_REQUIRED = dataclasses.MISSING


class DistillConfigError(TarkaError):
    """A distillation config that cannot run, naming the offending key."""


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """Teacher and student models (folders or hub ids) and how they compute."""

    student: str
    teacher: str = ""
    teacher_cache: str = ""  # a cache folder used instead of a teacher model
    student_output_dim: int = 0  # >0: replace the student's last Dense layer to this width
    dtype: str = "float32"
    remat: bool = False
    attention: str = ""


@dataclasses.dataclass(frozen=True)
class DataSection:
    """Raw-text corpus and batching."""

    train: tuple[str, ...]
    eval: tuple[str, ...] = ()
    text_field: str = "text"
    batch_size: int = 32
    seed: int = 0
    max_seq_length: int = 0
    teacher_max_seq_length: int = 0
    buckets: tuple[int, ...] = ()
    student_prompt: str = ""
    teacher_prompt: str = ""
    # name -> weight; "none" = no prompt. Each text draws one (seeded), the same for both models.
    prompt_mix: dict[str, float] = dataclasses.field(default_factory=dict)
    # Held-out retrieval pairs / STS rows (tarka_jax.train.heldout), with the student's prompts.
    eval_pairs: tuple[str, ...] = ()
    eval_pairs_columns: tuple[str, ...] = ("query", "document")
    eval_pairs_where: dict[str, object] = dataclasses.field(default_factory=dict)
    eval_sts: tuple[str, ...] = ()
    eval_sts_columns: tuple[str, ...] = ("sentence1", "sentence2", "score")
    eval_sts_where: dict[str, object] = dataclasses.field(default_factory=dict)
    eval_batch_size: int = 0  # rows per held-out forward pass; 0 = batch_size


@dataclasses.dataclass(frozen=True)
class MeshSection:
    data: int = -1
    fsdp: int = 1


@dataclasses.dataclass(frozen=True)
class TrainSection:
    steps: int
    log_every: int = 1
    eval_every: int = 0  # 0 = only at the end (when [data] eval / eval_pairs / eval_sts is set)


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    every: int = 100
    keep: int = 3
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class LoggingSection:
    tensorboard: bool = False
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """The whole run. ``base_dir`` (not a TOML key) is the folder relative paths start from."""

    model: ModelSection
    data: DataSection
    train: TrainSection
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    logging: LoggingSection = dataclasses.field(default_factory=LoggingSection)
    base_dir: str = "."

    def resolve(self, path: str) -> str:
        path = os.path.expanduser(path)
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(self.base_dir, path))

    def resolve_model(self, path_or_id: str) -> str:
        """A path relative to the config if that exists, else the string as given (hub id)."""
        local = self.resolve(path_or_id)
        return local if os.path.exists(local) else path_or_id

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("base_dir")
        return out


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise DistillConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1]
        return tuple(_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise DistillConfigError(f"{key} must be a table, got {value!r}")
        _, item = typing.get_args(annotation)
        return {str(k): _check_type(v, item, f"{key}.{k}") for k, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            raise DistillConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DistillConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DistillConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise DistillConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def _build(cls, table: Any, prefix: str):
    if not isinstance(table, dict):
        raise DistillConfigError(f"[{prefix}] must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "base_dir"}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise DistillConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(prefix + '.' + k if prefix else k for k in unknown)}; "
            f"[{prefix or 'top level'}] takes {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in table:
            if f.default is _REQUIRED and f.default_factory is _REQUIRED:
                raise DistillConfigError(f"missing required key {key}")
            continue
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, table[name], key)
        else:
            kwargs[name] = _check_type(table[name], annotation, key)
    try:
        return cls(**kwargs)
    except DistillConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise DistillConfigError(f"[{prefix}] {e}") from None


def parse_config(data: dict, base_dir: str = ".") -> DistillConfig:
    """A checked DistillConfig from a parsed TOML dict."""
    config = _build(DistillConfig, data, "")
    config = dataclasses.replace(config, base_dir=os.path.abspath(base_dir))
    _check(config)
    return config


def read_toml(path: str, error: type[Exception] = DistillConfigError) -> tuple[dict, str]:
    """(parsed TOML, the folder relative paths in it are resolved against), or a clear
    ``error`` naming the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path} is not valid TOML: {e}") from None
    return data, os.path.dirname(os.path.abspath(path))


def load_config(path: str) -> DistillConfig:
    """Read and check a TOML file (no model or data is touched yet)."""
    return parse_config(*read_toml(path))


def check_eval_columns(d, error: type[Exception] = DistillConfigError) -> None:
    """``data.eval_pairs_columns`` (query, document) / ``data.eval_sts_columns`` (text,
    text, score): right count, distinct (a section without the key checks nothing)."""
    for key, n, what in (("eval_pairs_columns", 2, "query and document"),
                         ("eval_sts_columns", 3, "two text fields and the score")):
        columns = getattr(d, key, None)
        if columns is not None and (len(columns) != n or len(set(columns)) != n):
            raise error(f"data.{key} needs {n} distinct fields ({what}), got {list(columns)}")
    if getattr(d, "eval_batch_size", 0) < 0:
        raise error("data.eval_batch_size must be >= 0")


def _check(c: DistillConfig) -> None:
    """Cheap consistency checks; file and model checks happen in ``run.prepare``."""
    check_eval_columns(c.data)
    if bool(c.model.teacher) == bool(c.model.teacher_cache):
        raise DistillConfigError("set exactly one of model.teacher (a model) and "
                                 "model.teacher_cache (a `tarka-jax cache-teacher` folder)")
    if c.model.student_output_dim < 0:
        raise DistillConfigError("model.student_output_dim must be >= 0")
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
    if c.train.steps <= 0:
        raise DistillConfigError(f"train.steps must be > 0, got {c.train.steps}")
    if not c.data.train:
        raise DistillConfigError("data.train lists no files")
    b, a = c.data.batch_size, c.optimizer.accumulation_steps
    if b <= 0 or b % a:
        raise DistillConfigError(f"data.batch_size ({b}) must be a positive multiple of "
                                 f"optimizer.accumulation_steps ({a})")
    if c.loss.kl > 0 and b // a < 2:
        raise DistillConfigError("loss.kl compares texts within a micro-batch: "
                                 "data.batch_size / optimizer.accumulation_steps must be >= 2")
    if c.model.dtype not in ("float32", "bfloat16"):
        raise DistillConfigError(f"model.dtype must be 'float32' or 'bfloat16', got "
                                 f"{c.model.dtype!r}")
    if c.checkpoint.every <= 0 or c.checkpoint.keep <= 0:
        raise DistillConfigError("checkpoint.every and checkpoint.keep must be > 0")
    if c.train.log_every <= 0:
        raise DistillConfigError("train.log_every must be > 0")
    if any(x <= 0 for x in c.data.buckets):
        raise DistillConfigError(f"data.buckets must be positive, got {list(c.data.buckets)}")

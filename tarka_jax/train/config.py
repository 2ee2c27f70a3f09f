"""The TOML schema every training loop shares: its sections, the checked builder, path rules.

A loop's config is a frozen dataclass with one field per TOML table, built by :func:`parse`:
an unknown key or a missing required one is an error naming it (``loss.kll``), every value is
checked against its annotation, and a section's own ``__post_init__`` may refuse a value
(the message keeps the table's name). This module holds what both loops take:

* the tables they share as they are: ``[optimizer]`` (:class:`OptimizerConfig`), ``[mesh]``,
  ``[train]``, ``[checkpoint]``, ``[logging]`` -- in :class:`RunConfig`, the base of a
  loop's whole config, with the path rules and ``to_dict`` (what run.json records and a
  resume compares);
* the fields both ``[model]`` tables and both ``[data]`` tables start with
  (:class:`ModelFields`, :class:`DataFields`); each loop's section adds its own;
* :func:`check_common`, the checks of those shared fields.

An optional string (``attention``) written as ``""`` in a TOML is None here: "" means
"not set" in TOML, which has no null, and the conversion happens once, at parse, so code
downstream passes ``config.model.attention`` as it is.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from typing import Any

from tarka_jax.errors import TarkaError
from tarka_jax.train.optim import OptimizerConfig

_REQUIRED = dataclasses.MISSING
_NONE = type(None)


class TrainConfigError(TarkaError):
    """A training config that cannot run, naming the offending key (each loop subclasses it)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelFields:
    """How the trained model computes: what both loops' ``[model]`` start with."""

    dtype: str = "float32"  # compute dtype; params stay float32
    remat: bool = False  # recompute each layer in the backward pass
    attention: str | None = None  # attention implementation; None (TOML "") = the best


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataFields:
    """Files, batching and lengths: what both loops' ``[data]`` start with."""

    train: tuple[str, ...]
    eval: tuple[str, ...] = ()
    batch_size: int = 32  # global batch (all hosts)
    seed: int = 0  # shuffle seed (order per epoch)
    max_seq_length: int = 0  # 0 = the model's own
    buckets: tuple[int, ...] = ()  # padded lengths; () = powers of two from 16
    eval_batch_size: int = 0  # rows per held-out forward pass; 0 = batch_size
    # Held-out STS rows (tarka_jax.train.heldout): two texts and a gold score.
    eval_sts: tuple[str, ...] = ()
    eval_sts_columns: tuple[str, ...] = ("sentence1", "sentence2", "score")
    eval_sts_where: dict[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MeshSection:
    data: int = -1  # -1 = all devices left over
    fsdp: int = 1


@dataclasses.dataclass(frozen=True)
class TrainSection:
    steps: int
    log_every: int = 1
    eval_every: int = 0  # 0 = only at the end (when held-out data is set)


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    every: int = 100
    keep: int = 3
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class LoggingSection:
    tensorboard: bool = False
    progress: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """The tables every loop has; a loop's config adds ``model``, ``data`` and ``loss``.

    ``base_dir`` (not a TOML key) is the folder relative paths start from.
    """

    train: TrainSection
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


# ---- the builder ----------------------------------------------------------------------------


def _check_type(value: Any, annotation: Any, key: str, error: type[Exception]) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise error(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1]
        return tuple(_check_type(v, item, f"{key}[{i}]", error) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not _NONE]
        if len(args) == 1 and _NONE in typing.get_args(annotation):  # Optional[T]
            if value == "" and args[0] is str:
                return None  # TOML has no null: "" means "not set"
            return _check_type(value, args[0], key, error)
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise error(f"{key} must be a table, got {value!r}")
        _, item = typing.get_args(annotation)
        return {str(k): _check_type(v, item, f"{key}.{k}", error) for k, v in value.items()}
    for kind, accepts, what in ((bool, (bool,), "true or false"), (int, (int,), "an integer"),
                                (float, (int, float), "a number"), (str, (str,), "a string")):
        if annotation is kind:
            if (kind is not bool and isinstance(value, bool)) or not isinstance(value, accepts):
                raise error(f"{key} must be {what}, got {value!r}")
            return float(value) if kind is float else value
    return value


def build(cls, table: Any, prefix: str, error: type[Exception]):
    """A ``cls`` from a TOML table, every key checked; nested dataclasses built in turn."""
    if not isinstance(table, dict):
        raise error(f"[{prefix}] must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "base_dir"}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise error(f"unknown key{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(prefix + '.' + k if prefix else k for k in unknown)}; "
                    f"[{prefix or 'top level'}] takes {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in table:
            if f.default is _REQUIRED and f.default_factory is _REQUIRED:
                raise error(f"missing required key {key}")
            continue
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = build(annotation, table[name], key, error)
        else:
            kwargs[name] = _check_type(table[name], annotation, key, error)
    try:
        return cls(**kwargs)
    except error:
        raise
    except (ValueError, TypeError) as e:
        raise error(f"[{prefix}] {e}") from None


def read_toml(path: str, error: type[Exception] = TrainConfigError) -> tuple[dict, str]:
    """(parsed TOML, the folder relative paths in it are resolved against), or a clear
    ``error`` naming the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid TOML: {e}") from None
    return data, os.path.dirname(os.path.abspath(path))


def parse(cls, data: dict, base_dir: str, error: type[Exception]):
    """A ``cls`` (a :class:`RunConfig`) from a parsed TOML dict, its shared fields checked."""
    config = build(cls, data, "", error)
    config = dataclasses.replace(config, base_dir=os.path.abspath(base_dir))
    check_common(config, error)
    return config


# ---- checks of the shared fields ------------------------------------------------------------


def check_eval_columns(d, error: type[Exception] = TrainConfigError) -> None:
    """``data.eval_pairs_columns`` (query, document) / ``data.eval_sts_columns`` (text,
    text, score): right count, distinct (a section without the key checks nothing)."""
    for key, n, what in (("eval_pairs_columns", 2, "query and document"),
                         ("eval_sts_columns", 3, "two text fields and the score")):
        columns = getattr(d, key, None)
        if columns is not None and (len(columns) != n or len(set(columns)) != n):
            raise error(f"data.{key} needs {n} distinct fields ({what}), got {list(columns)}")


def check_common(c: RunConfig, error: type[Exception]) -> None:
    """Cheap checks of the shared tables and fields; file and model checks come later."""
    d = c.data
    check_eval_columns(d, error)
    if not d.train:
        raise error("data.train lists no files")
    if any(x <= 0 for x in d.buckets):
        raise error(f"data.buckets must be positive, got {list(d.buckets)}")
    if d.max_seq_length < 0 or d.eval_batch_size < 0:
        raise error("data.max_seq_length and data.eval_batch_size must be >= 0")
    if c.model.dtype not in ("float32", "bfloat16"):
        raise error(f"model.dtype must be 'float32' or 'bfloat16', got {c.model.dtype!r}")
    if c.train.steps <= 0:
        raise error(f"train.steps must be > 0, got {c.train.steps}")
    if c.train.log_every <= 0 or c.train.eval_every < 0:
        raise error("train.log_every must be > 0 and train.eval_every >= 0")
    if c.checkpoint.every <= 0 or c.checkpoint.keep <= 0:
        raise error("checkpoint.every and checkpoint.keep must be > 0")


def check_lengths(error: type[Exception], positions: int, model: str, **lengths) -> None:
    """Token lengths of the config (``data.max_seq_length`` = value, ``data.buckets`` = a
    tuple; keys with ``__`` for ``.``) within the ``positions`` (max_position_embeddings) of
    ``model``: a larger one is refused before any row is padded to it."""
    for key, value in lengths.items():
        values = value if isinstance(value, tuple) else (value,)
        if any(v > positions for v in values):
            name = key.replace("__", ".")
            shown = list(values) if isinstance(value, tuple) else value
            raise error(f"{name} = {shown} exceeds the {positions} positions of {model} "
                        "(max_position_embeddings)")

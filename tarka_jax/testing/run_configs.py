"""Training configs for tests, written from tables: the small TOML a loop test needs.

``write_config(path, tables)`` writes a dict of TOML tables (tomllib reads, it does not
write). :func:`distill_tables` / :func:`finetune_tables` give a tiny run's tables; each
keyword merges into its table (``distill_tables(t, s, [TRAIN], data={"batch_size": 4})``).
"""

from __future__ import annotations

import json
import os


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_text(tables: dict) -> str:
    """``{"data": {"batch_size": 4}}`` -> ``[data]\\nbatch_size = 4\\n``."""
    out = []
    for name, table in tables.items():
        out.append(f"[{name}]")
        out += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


def write_config(path: str | os.PathLike, tables: dict) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(toml_text(tables))
    return os.fspath(path)


def _merged(base: dict, sections: dict) -> dict:
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


def distill_tables(teacher: str, student: str, files, **sections) -> dict:
    """A tiny distillation run: 4 steps, batch 8, lengths 32, a checkpoint every 2 steps."""
    return _merged({
        "model": {"teacher": teacher, "student": student},
        "data": {"train": list(files), "batch_size": 8, "max_seq_length": 32,
                 "teacher_max_seq_length": 32, "buckets": [16, 32]},
        "optimizer": {"learning_rate": 3e-3},
        "train": {"steps": 4, "log_every": 1},
        "checkpoint": {"every": 2, "async_save": False},
        "logging": {"progress": False},
    }, sections)


def finetune_tables(model: str, files, **sections) -> dict:
    """A tiny fine-tuning run on (summary, body) pairs of the ``train`` split."""
    return _merged({
        "model": {"model": model},
        "data": {"train": list(files), "columns": ["summary", "body"],
                 "train_where": {"split": "train"}, "batch_size": 8, "max_seq_length": 32,
                 "buckets": [16, 32]},
        "optimizer": {"learning_rate": 3e-3},
        "train": {"steps": 4, "log_every": 1},
        "checkpoint": {"every": 2, "async_save": False},
        "logging": {"progress": False},
    }, sections)

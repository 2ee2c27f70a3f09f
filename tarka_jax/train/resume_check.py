"""An honest ``--resume``: the config and the inputs a run resumes with must be the ones it
ran with.

A resumed run whose optimizer, schedule, loss, data or model differ would train
its later steps differently from its earlier ones while ``run.json`` says
otherwise. So a resume compares the new config with the one in ``run.json`` by
TOML names (``optimizer.learning_rate``), and the fingerprints of the files it trains
from (training data, model weights and tokenizers, a teacher cache:
:mod:`tarka_jax.train.fingerprint`) with those ``run.json`` recorded, by size and
SHA-256 (``inputs.data.train[0]``):

* a difference in a key that changes the math, or any changed input, is refused,
  the keys (and the files) named;
* ``--allow-config-change`` accepts it and appends a record to
  ``config_changes.jsonl`` (step it takes effect, old and new values, the new TOML);
  ``run.json`` and ``config.toml`` keep describing how the run started;
* keys that change only logging, checkpointing, evaluation or the device layout
  (:data:`NO_MATH_KEYS`) may change freely (and are recorded too).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from tarka_jax.errors import TarkaError
from tarka_jax.train import fingerprint

CHANGES_FILE = "config_changes.jsonl"
# Prefixes (TOML names) whose values do not change what training computes.
NO_MATH_KEYS = ("train.log_every", "train.eval_every", "checkpoint.", "logging.", "mesh.",
                "model.remat", "model.attention", "data.eval")


class ConfigChangeError(TarkaError):
    """A resume whose config differs from the run's in something that changes the math."""


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"learning_rate": 1e-3}}`` -> ``{"optimizer.learning_rate": 1e-3}``.

    Tables nest with dots; lists / tuples compare as JSON lists. ``data.prompt_mix``
    (a table of weights) flattens like any other table.
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.loads(json.dumps(value))
    return out


def diff(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """``{toml name: (old value, new value)}`` for every key that differs (missing = None)."""
    return _diff_flat(flatten(old), flatten(new))


def _diff_flat(a: dict, b: dict) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def effective_config(workdir: str, run_config: dict, run_inputs: dict | None = None
                     ) -> dict[str, Any]:
    """The flattened config (and compared inputs) now in force: ``run.json``'s, with each
    recorded change applied."""
    flat = {**flatten(run_config), **fingerprint.compared(run_inputs)}
    for record in read_changes(workdir):
        flat.update({k: v["new"] for k, v in record["changes"].items()})
    return {k: v for k, v in flat.items() if v is not None}


def changes_math(name: str) -> bool:
    return not any(name == k or (k.endswith(".") and name.startswith(k)) for k in NO_MATH_KEYS)


def check_resume(workdir: str, run_config: dict, new_config: dict, *, step: int,
                 allow_config_change: bool = False, config_text: str | None = None,
                 run_inputs: dict | None = None, new_inputs: dict | None = None,
                 record: bool = True) -> dict:
    """Refuse (or, when allowed, record) a resume whose config or inputs differ; returns
    the diff.

    The comparison is with what is in force: ``run_config`` (and ``run_inputs``) plus the
    changes recorded earlier (so an accepted change is not asked about again).

    Args:
      run_config: the config the run was started with (``run.json``'s ``config``).
      new_config: the config of this resume (``DistillConfig.to_dict()``).
      step: the checkpoint step the resume continues from (where a change takes effect).
      run_inputs, new_inputs: ``run.json``'s ``inputs`` and this resume's; None for a
        run folder that recorded none (its inputs are not compared).
      record: append the record (False on every process but the one that writes).

    Raises:
      ConfigChangeError: a key that changes the math or an input differs and
        ``allow_config_change`` is False; the message names every such key and file.
    """
    new = flatten(new_config)
    if run_inputs is not None:
        new.update(fingerprint.compared(new_inputs))
    changed = _diff_flat(effective_config(workdir, run_config, run_inputs), new)
    if not changed:
        return changed
    math = [k for k in changed if changes_math(k)]
    if math and not allow_config_change:
        raise ConfigChangeError(_refusal(changed, math, step, new_inputs or {}))
    if record:
        entry = {"step": step, "time": datetime.datetime.now(datetime.UTC).isoformat(),
                 "changes": {k: {"old": v[0], "new": v[1]} for k, v in changed.items()},
                 "changes_math": math, "config_text": config_text}
        with open(os.path.join(workdir, CHANGES_FILE), "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    return changed


def _refusal(changed: dict, math: list[str], step: int, inputs: dict) -> str:
    keys = [k for k in math if not k.startswith("inputs.")]
    files = [k for k in math if k.startswith("inputs.")]
    parts = []
    if keys:
        shown = "; ".join(f"{k}: {_show(changed[k][0])} -> {_show(changed[k][1])}" for k in keys)
        parts.append(f"a config that differs from the run's ({shown})")
    if files:
        shown = "; ".join(f"{k.removeprefix('inputs.')} {fingerprint.where(inputs, k)}: "
                          f"{_file(changed[k][0])} -> {_file(changed[k][1])}" for k in files)
        parts.append(f"input files whose content changed since the run started ({shown})")
    return (f"--resume with {' and '.join(parts)}; this would train the steps after {step} "
            "differently from those before. Restore them, start a new --workdir, or pass "
            f"--allow-config-change to record the change in {CHANGES_FILE}")


def _file(value: str | None) -> str:
    if value is None:
        return "absent"
    size, sha = value.split(":", 1)
    return f"{size} bytes, sha256 {sha[:12]}"


def read_changes(workdir: str) -> list[dict]:
    """The records :func:`check_resume` appended, oldest first."""
    path = os.path.join(workdir, CHANGES_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _show(value: Any) -> str:
    return json.dumps(value)


__all__ = [
    "CHANGES_FILE",
    "NO_MATH_KEYS",
    "ConfigChangeError",
    "check_resume",
    "diff",
    "effective_config",
    "flatten",
    "read_changes",
]

"""An honest ``--resume``: the config a run resumes with must be the one it ran with.

A resumed run whose optimizer, schedule, loss, data or model differ would train
its later steps differently from its earlier ones while ``run.json`` says
otherwise. So a resume compares the new config with the one in ``run.json`` by
TOML names (``optimizer.learning_rate``):

* a difference in a key that changes the math is refused, the keys named;
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


def effective_config(workdir: str, run_config: dict) -> dict[str, Any]:
    """The flattened config now in force: ``run.json``'s, with each recorded change applied."""
    flat = flatten(run_config)
    for record in read_changes(workdir):
        flat.update({k: v["new"] for k, v in record["changes"].items()})
    return {k: v for k, v in flat.items() if v is not None}


def changes_math(name: str) -> bool:
    return not any(name == k or (k.endswith(".") and name.startswith(k)) for k in NO_MATH_KEYS)


def check_resume(workdir: str, run_config: dict, new_config: dict, *, step: int,
                 allow_config_change: bool = False, config_text: str | None = None) -> dict:
    """Refuse (or, when allowed, record) a resume whose config differs; returns the diff.

    The comparison is with the config in force: ``run_config`` plus the changes
    recorded earlier (so an accepted change is not asked about again).

    Args:
      run_config: the config the run was started with (``run.json``'s ``config``).
      new_config: the config of this resume (``DistillConfig.to_dict()``).
      step: the checkpoint step the resume continues from (where a change takes effect).

    Raises:
      ConfigChangeError: a key that changes the math differs and
        ``allow_config_change`` is False; the message names every such key.
    """
    changed = _diff_flat(effective_config(workdir, run_config), flatten(new_config))
    if not changed:
        return changed
    math = [k for k in changed if changes_math(k)]
    if math and not allow_config_change:
        shown = "; ".join(f"{k}: {_show(changed[k][0])} -> {_show(changed[k][1])}" for k in math)
        raise ConfigChangeError(
            f"--resume with a config that differs from the run's ({shown}); this would train "
            f"the steps after {step} differently from those before. Restore the config, start "
            "a new --workdir, or pass --allow-config-change to record the change in "
            f"{CHANGES_FILE}")
    record = {"step": step, "time": datetime.datetime.now(datetime.UTC).isoformat(),
              "changes": {k: {"old": v[0], "new": v[1]} for k, v in changed.items()},
              "changes_math": math, "config_text": config_text}
    with open(os.path.join(workdir, CHANGES_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return changed


def read_changes(workdir: str) -> list[dict]:
    """The records :func:`check_resume` appended, oldest first."""
    path = os.path.join(workdir, CHANGES_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_new_run_folder(workdir: str, run_file: str) -> None:
    """A fresh run may use a new or empty folder, or an old run folder — nothing else.

    Raises:
      FileExistsError: ``workdir`` holds files but no ``run_file``: it is not a run
        folder, and a run would write (and on a restart clear) files in it.
    """
    if os.path.isdir(workdir) and os.listdir(workdir) and \
            not os.path.isfile(os.path.join(workdir, run_file)):
        raise FileExistsError(f"--workdir {workdir} is not empty and is not a run folder (no "
                              f"{run_file}); choose a new or empty folder")


def _show(value: Any) -> str:
    return json.dumps(value)


__all__ = [
    "CHANGES_FILE",
    "NO_MATH_KEYS",
    "ConfigChangeError",
    "check_new_run_folder",
    "check_resume",
    "diff",
    "effective_config",
    "flatten",
    "read_changes",
]

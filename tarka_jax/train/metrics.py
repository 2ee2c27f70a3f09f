"""Per-step metrics: JSON lines in the run folder, optional TensorBoard, a progress bar.

Only process 0 writes. Values arrive as device scalars; they are fetched once
per logged step (one host sync per ``log_every`` steps, not per step).
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np

from tarka_jax.convert.run_folder import RunFolderError
from tarka_jax.errors import UsageError
from tarka_jax.files.jsonfiles import open_fresh_temporary
from tarka_jax.nn.numerics import l2_normalize
from tarka_jax.runtime.extras import require


class MetricsWriter:
    """``write(step, metrics)`` to ``metrics.jsonl`` (+ TensorBoard), and a tqdm bar."""

    def __init__(self, workdir: str, *, total_steps: int, start_step: int = 0,
                 tensorboard: bool = False, progress: bool = True):
        self.enabled = jax.process_index() == 0
        self._file = None
        self._tb = None
        self._bar = None
        if not self.enabled:
            return
        self.path = path = os.path.join(workdir, "metrics.jsonl")
        try:
            _drop_rows_after(path, start_step)
            self._file = open(path, "a", encoding="utf-8")
        except OSError as e:
            raise RunFolderError(f"writing {path}: {e.strerror or e}") from None
        if tensorboard:
            tensorboard_x = require("tensorboardX", "logging.tensorboard = true")
            self._tb = tensorboard_x.SummaryWriter(os.path.join(workdir, "tensorboard"))
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step",
                             dynamic_ncols=True)

    def write(self, step: int, metrics: dict) -> dict:
        values = {k: _scalar(v) for k, v in jax.device_get(metrics).items()}
        if not self.enabled:
            return values
        try:
            self._file.write(json.dumps({"step": int(step), **values}) + "\n")
            self._file.flush()
        except OSError as e:  # a full disk: name the file, not just the errno
            raise RunFolderError(f"writing {self.path} (step {step}): {e.strerror or e}") \
                from None
        if self._tb is not None:
            for k, v in values.items():
                if v is not None:
                    self._tb.add_scalar(k, v, step)
        if self._bar is not None:
            shown = {k: f"{values[k]:.4g}" for k in ("loss", "eval_cosine")
                     if values.get(k) is not None}
            self._bar.set_postfix(shown, refresh=False)
        return values

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # the write that failed has said so, naming the file
                pass


def _drop_rows_after(path: str, step: int) -> None:
    """Forget rows past ``step``: a run killed after logging them resumes from an earlier
    checkpoint and logs those steps again (without this, they would appear twice). A row cut
    short by the kill is dropped too."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    if len(keep) != len(lines):
        tmp, f = open_fresh_temporary(path)  # never a user's metrics.jsonl.tmp
        with f:
            f.writelines(keep)
        os.replace(tmp, path)


def _scalar(v):
    x = float(np.asarray(v))
    return x if math.isfinite(x) else None


def read_metrics(workdir: str) -> list[dict]:
    """All records of a run's metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- agreement with the teacher ----------------------------------------------------------


def _unit(x) -> np.ndarray:
    return l2_normalize(np.asarray(x, np.float64))  # agreement in float64


def nearest_neighbours(x: np.ndarray) -> np.ndarray:
    """int ``[N]``: for each row the index of its most cosine-similar *other* row."""
    u = _unit(x)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, axis=1)


def agreement(student: np.ndarray, teacher: np.ndarray, dim: int | None = None) -> dict:
    """``{"eval_cosine", "eval_top1"}`` of float ``[N, Ds]`` vs ``[N, Dt]`` embeddings.

    ``dim``: compare cosines on the first ``dim`` coordinates (None = the full width
    when both are equal; otherwise no ``eval_cosine``). ``eval_top1`` needs N >= 2.
    """
    student, teacher = np.asarray(student), np.asarray(teacher)
    if student.shape[0] != teacher.shape[0]:
        raise UsageError(f"{student.shape[0]} student vs {teacher.shape[0]} teacher embeddings")
    out = {}
    if dim is None and student.shape[1] == teacher.shape[1]:
        dim = student.shape[1]
    if dim is not None:
        s, t = _unit(student[:, :dim]), _unit(teacher[:, :dim])
        out["eval_cosine"] = float(np.mean(np.sum(s * t, axis=-1)))
    if student.shape[0] >= 2:
        out["eval_top1"] = float(np.mean(nearest_neighbours(student)
                                         == nearest_neighbours(teacher)))
    return out

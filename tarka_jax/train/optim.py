"""The optimizer: global-norm clipping, then AdamW with warmup + cosine decay.

AdamW here is the same update as ``torch.optim.AdamW`` (decoupled decay scaled by
the learning rate, bias-corrected moments, eps outside the square root); the
parity test checks it step by step. Weight decay skips every 1-D parameter: the
RMSNorm offsets (decaying them pulls the scale ``1 + w`` towards 1, not towards
zero, and is not what the teacher was trained with) and the Dense biases.

``freeze`` keeps the parameters whose path matches one of its regular expressions
fixed (``optax.multi_transform`` with ``set_to_zero``: no Adam moments, no decay,
not counted in the clipping norm), e.g. ``["encoder/embed_tokens"]`` to fine-tune
a small model on few pairs without moving its token embeddings.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import optax

from tarka_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW, its schedule and clipping.

    Attributes:
      learning_rate: peak learning rate.
      schedule: "cosine" (linear warmup from 0 then cosine decay to
        ``learning_rate * end_lr_ratio`` at ``total_steps``) or "constant"
        (linear warmup, then flat).
      warmup_steps: optimizer updates of linear warmup.
      end_lr_ratio: final / peak learning rate of the cosine schedule.
      b1, b2, eps: Adam moments.
      weight_decay: decoupled decay on matrices (never norms or biases).
      clip_norm: global gradient-norm clip; 0 disables it.
      accumulation_steps: micro-batches per update (the global batch is split).
      freeze: regular expressions (``re.search``) over parameter paths such as
        ``encoder/layers_0/mlp/up_proj/kernel``; matching parameters are not updated.
    """

    learning_rate: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 0
    end_lr_ratio: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    accumulation_steps: int = 1
    freeze: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "freeze", tuple(self.freeze))
        for pattern in self.freeze:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"optimizer.freeze: {pattern!r} is not a regular expression "
                                 f"({e})") from None
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"optimizer.schedule must be 'cosine' or 'constant', "
                             f"got {self.schedule!r}")
        if self.learning_rate <= 0:
            raise ConfigError(f"optimizer.learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0 or self.accumulation_steps < 1 or self.clip_norm < 0:
            raise ConfigError("optimizer.warmup_steps >= 0, accumulation_steps >= 1 and "
                             "clip_norm >= 0 are required")


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    peak = config.learning_rate
    if config.schedule == "constant":
        if config.warmup_steps == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, config.warmup_steps), optax.constant_schedule(peak)],
            [config.warmup_steps],
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=config.warmup_steps,
        decay_steps=max(total_steps, config.warmup_steps + 1),
        end_value=peak * config.end_lr_ratio,
    )


def decay_mask(params):
    """True where weight decay applies: every parameter with two or more dims."""
    return jax.tree.map(lambda p: len(p.shape) >= 2, params)


def freeze_labels(patterns: tuple[str, ...]):
    """params -> the same tree of "frozen" / "train" labels; a pattern matching nothing
    is an error (a misspelt path would otherwise train everything silently)."""

    def labels(params):
        paths = {path: "/".join(str(getattr(k, "key", k)) for k in path)
                 for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
        unused = [p for p in patterns if not any(re.search(p, name) for name in paths.values())]
        if unused and paths:  # (optax.tree_map_params passes a tree without leaves)
            raise ConfigError(f"optimizer.freeze: {unused} match no parameter (paths look like "
                             f"{next(iter(paths.values()))!r})")
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if any(re.search(p, paths[path]) for p in patterns)
            else "train", params)

    return labels


def make_optimizer(config: OptimizerConfig, total_steps: int):
    """(optax transformation, schedule)."""
    schedule = learning_rate_schedule(config, total_steps)
    parts = []
    if config.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.clip_norm))
    parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                             weight_decay=config.weight_decay, mask=decay_mask))
    tx = optax.chain(*parts)
    if config.freeze:
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                                   freeze_labels(config.freeze))
    return tx, schedule

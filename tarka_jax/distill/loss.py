"""Distillation loss: student sentence embeddings pulled towards the teacher's.

Three terms, each computed at every Matryoshka dim ``m`` on the first ``m``
coordinates re-normalised to unit length, then averaged over the dims:

* ``cosine``: mean over the batch of ``1 - cos(s_i, t_i)``.
* ``mse``: mean over batch and coordinates of ``(s_i - t_i)^2`` on the unit
  vectors (``torch.nn.MSELoss`` semantics). For unit vectors this is exactly
  ``2 (1 - cos) / m``: the cosine term rescaled by the dim, kept because
  sentence-transformers' ``MSELoss`` recipes are stated in it.
* ``kl``: ``KL(p_t || p_s)`` between the in-batch similarity distributions,
  ``p_x[i] = softmax_j(x_i . x_j / temperature)`` over the *other* texts of the
  batch (the diagonal is excluded: self-similarity is 1 for both models and would
  swamp the distribution at low temperature), averaged over rows.

Default: ``cosine = 1, kl = 1, mse = 0, temperature = 0.05``, full dim only.
The cosine term aligns each embedding's direction, which is all a normalised
retrieval embedding uses; MSE on unit vectors adds nothing the cosine term lacks.
The KL term transfers the teacher's *relative* geometry (which neighbours are
close), what retrieval ranking depends on; 0.05 is the usual contrastive
temperature for unit embeddings (cosines in [-1, 1] become logits in [-20, 20]).
Matryoshka dims (e.g. 768/512/256/128 for EmbeddingGemma) are a recipe choice,
off by default because they only make sense for the model's actual widths.

Everything is float32 and pure, so the same function runs inside the jitted step
and in the PyTorch parity test's mirror of it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tarka_jax.errors import TarkaError
from tarka_jax.nn.numerics import l2_normalize

Array = jax.Array


class LossConfigError(TarkaError):
    """A loss setting that cannot work with the teacher and student given."""


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms and where they are evaluated.

    Attributes:
      cosine: weight of the cosine-distance term.
      mse: weight of the MSE term on unit vectors.
      kl: weight of the in-batch similarity KL term.
      temperature: softmax temperature of the similarity distributions.
      matryoshka_dims: dims to evaluate the loss at (first ``m`` coordinates);
        empty = the full embedding only.
    """

    cosine: float = 1.0
    mse: float = 0.0
    kl: float = 1.0
    temperature: float = 0.05
    matryoshka_dims: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("cosine", "mse", "kl"):
            if getattr(self, name) < 0:
                raise LossConfigError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.cosine == 0 and self.mse == 0 and self.kl == 0:
            raise LossConfigError("loss.cosine, loss.mse and loss.kl are all 0: nothing to train")
        if self.temperature <= 0:
            raise LossConfigError(f"loss.temperature must be > 0, got {self.temperature}")
        if any(int(m) <= 0 for m in self.matryoshka_dims):
            raise LossConfigError(f"loss.matryoshka_dims must be positive, got "
                                  f"{list(self.matryoshka_dims)}")
        if len(set(self.matryoshka_dims)) != len(self.matryoshka_dims):
            raise LossConfigError(f"loss.matryoshka_dims has duplicates: "
                                  f"{list(self.matryoshka_dims)}")

    def dims(self, student_dim: int, teacher_dim: int) -> tuple[int, ...]:
        """The dims the loss is evaluated at; raises if the two models cannot serve them.

        The check runs before any compute: cosine and MSE compare coordinates, so
        without Matryoshka dims the two embedding widths must be equal; with them,
        every dim must fit in both widths. KL compares only similarity matrices, so
        a KL-only loss works across any widths (each model at its own full width).
        """
        coordinatewise = self.cosine > 0 or self.mse > 0
        if not self.matryoshka_dims:
            if coordinatewise and student_dim != teacher_dim:
                raise LossConfigError(
                    f"the student embeds to {student_dim} dims and the teacher to {teacher_dim}; "
                    "loss.cosine / loss.mse compare coordinates and need equal widths (set "
                    "loss.matryoshka_dims to dims both have, or use a KL-only loss)"
                )
            return (student_dim,)
        too_big = [m for m in self.matryoshka_dims if m > min(student_dim, teacher_dim)]
        if too_big:
            raise LossConfigError(
                f"loss.matryoshka_dims {too_big} exceed the embedding width (student "
                f"{student_dim}, teacher {teacher_dim})"
            )
        return tuple(int(m) for m in self.matryoshka_dims)


def _similarity_kl(s: Array, t: Array, temperature: float) -> Array:
    """Mean over rows of KL(softmax(t t^T / tau) || softmax(s s^T / tau)), diagonal excluded."""
    b = s.shape[0]
    off = ~jnp.eye(b, dtype=bool)  # [B, B]
    hp = jax.lax.Precision.HIGHEST
    logits_s = jnp.where(off, jnp.matmul(s, s.T, precision=hp) / temperature, -jnp.inf)
    logits_t = jnp.where(off, jnp.matmul(t, t.T, precision=hp) / temperature, -jnp.inf)
    log_ps = jax.nn.log_softmax(logits_s, axis=-1)
    log_pt = jax.nn.log_softmax(logits_t, axis=-1)
    # -inf - -inf on the diagonal: select before multiplying so neither the value
    # nor its gradient sees a NaN.
    diff = jnp.where(off, log_pt - log_ps, 0.0)
    return jnp.mean(jnp.sum(jnp.exp(log_pt) * diff, axis=-1))


def distill_loss(student: Array, teacher: Array, config: LossConfig) -> tuple[Array, dict]:
    """The weighted loss and each term, averaged over the Matryoshka dims.

    Args:
      student: float32 [B, Ds] student sentence embeddings.
      teacher: float32 [B, Dt] teacher sentence embeddings (no gradient wanted:
        the caller stops it).
      config: term weights, temperature, dims.

    Returns:
      (loss, terms): scalars; ``terms`` holds "kl" and, when the widths compared
      are equal, "cosine" and "mse" -- reported even at weight 0 (cheap) so runs
      with different weights stay comparable.
    """
    student = student.astype(jnp.float32)
    teacher = teacher.astype(jnp.float32)
    dims = config.dims(student.shape[-1], teacher.shape[-1])
    terms: dict[str, list] = {}
    for m in dims:
        s = l2_normalize(jnp.asarray(student[:, :m]))
        # Without Matryoshka dims a KL-only loss may compare different widths.
        t = l2_normalize(jnp.asarray(teacher[:, :m] if config.matryoshka_dims else teacher))
        if s.shape[-1] == t.shape[-1]:
            cos = jnp.sum(s * t, axis=-1)  # [B]
            terms.setdefault("cosine", []).append(jnp.mean(1.0 - cos))
            terms.setdefault("mse", []).append(jnp.mean(jnp.square(s - t)))
        terms.setdefault("kl", []).append(_similarity_kl(s, t, config.temperature))
    out = {k: sum(v) / len(v) for k, v in terms.items()}
    loss = config.kl * out["kl"]
    for name in ("cosine", "mse"):
        if getattr(config, name):
            loss = loss + getattr(config, name) * out[name]
    return loss, out

"""The programs benchmarks/accelerator_compile.py compiles, built by the project's own code.

Every import of model and training code is here, in :func:`_project` (the package
layout may move; repoint them in one place). Each builder returns a
:class:`Program`: the jitted function, abstract arguments carrying their
shardings (``jax.ShapeDtypeStruct``: nothing is allocated), the global token
count and the counted FLOPs (benchmarks/accelerator_flops.py).

* ``forward``: the Embedder's packed forward (``embed`` with ``segments_per_row``),
  params replicated, rows split over a ``"data"`` axis of every chip, as
  ``Embedder(devices=...)`` runs it; bfloat16 compute, float32 params.
* ``distill``: the distillation step (Tarka student + online EmbeddingGemma teacher,
  cosine + KL loss, AdamW) on a ``("data", "fsdp")`` mesh with params and optimizer
  state sharded over ``fsdp`` (tarka_jax/nn/sharding_rules.py).
* ``finetune``: the contrastive step, cached MNRL (GradCache mini-batches) over token
  columns (default [anchor, positive]: in-batch negatives); the loss sees the global
  batch, so every anchor meets every chip's candidates.
"""

from __future__ import annotations

import collections
import dataclasses
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from accelerator_flops import forward_flops, training_flops
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def _project():
    """The project's names this benchmark uses (one place to repoint after a regroup)."""
    from tarka_jax.distill.loss import LossConfig
    from tarka_jax.distill.step import StepConfig, make_train_step
    from tarka_jax.finetune.loss import ContrastiveLossConfig
    from tarka_jax.finetune.step import FinetuneStepConfig, make_finetune_step
    from tarka_jax.inference import batching
    from tarka_jax.nn.config import embeddinggemma_300m, layer_types_pattern, tarka_150m
    from tarka_jax.nn.encoder import embed, init_params
    from tarka_jax.nn.sharding_rules import param_shardings
    from tarka_jax.train import sharding as train_sharding
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer
    from tarka_jax.train.state import abstract_sharded_state
    shd = types.SimpleNamespace(make_mesh=train_sharding.make_mesh,
                                batch_sharding=train_sharding.batch_sharding,
                                param_shardings=param_shardings)
    return types.SimpleNamespace(
        batching=batching, embeddinggemma_300m=embeddinggemma_300m,
        layer_types_pattern=layer_types_pattern, tarka_150m=tarka_150m, shd=shd,
        LossConfig=LossConfig, OptimizerConfig=OptimizerConfig, make_optimizer=make_optimizer,
        StepConfig=StepConfig, abstract_sharded_state=abstract_sharded_state,
        make_train_step=make_train_step, ContrastiveLossConfig=ContrastiveLossConfig,
        FinetuneStepConfig=FinetuneStepConfig, make_finetune_step=make_finetune_step,
        embed=embed, init_params=init_params)


@dataclasses.dataclass
class Program:
    name: str  # "forward" | "distill" | "finetune"
    implementation: str
    shape: str  # human-readable
    fn: Any  # jitted
    args: tuple  # abstract, sharded
    mesh: Mesh
    tokens: int  # global tokens per call (student tokens for distillation)
    flops: dict  # global {"useful", "executed"}
    settings: dict


def models(layers: int = 24):
    """(Tarka student, EmbeddingGemma teacher) configs; ``layers`` < 24 keeps their pattern
    (window layers, every sixth full) and always one full layer (the CI's reduced model)."""
    m = _project()
    student, teacher = m.tarka_150m(), m.embeddinggemma_300m()
    if layers == student.num_layers:
        return student, teacher
    types = m.layer_types_pattern(layers, min(6, layers))
    return (dataclasses.replace(student, num_layers=layers, layer_types=types),
            dataclasses.replace(teacher, num_layers=layers, layer_types=types))


def _abstract_params(config, sharding_of):
    m = _project()
    shapes = jax.eval_shape(lambda: m.init_params(config, jax.random.key(0)))
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, jnp.float32, sharding=sh),
                        shapes, sharding_of(shapes))


def _tokens(rows: int, width: int, sharding) -> dict:
    s = jax.ShapeDtypeStruct((rows, width), jnp.int32, sharding=sharding)
    return {"input_ids": s, "segment_ids": s, "positions": s}


def planner_shapes(config, devices: int, max_length: int = 2048, batch_size: int = 32,
                   texts: int = 2000, seed: int = 0) -> dict:
    """{"largest", "typical"}: (rows, width, texts per row) of packed passes the planner emits.

    largest: a full pass at ``max_length``. typical: the most frequent pass of a passage
    mix (lengths uniform in 100..300 tokens, the Embedder's packing and cost model).
    """
    b = _project().batching
    full = -(-batch_size // devices) * devices
    lengths = np.random.default_rng(seed).integers(100, 301, size=texts)
    ids = [np.ones(n, np.int32) for n in lengths]
    plan = b.plan_packed(ids, full, b.pack_width_sets(max_length), devices=devices,
                         slot_cost=b.SlotCost.of(config))
    counts = collections.Counter((p.arrays["input_ids"].shape, p.segments) for p in plan)
    ((rows, width), segments), _ = counts.most_common(1)[0]
    return {"largest": (full, max_length, b.segments_for(max_length)),
            "typical": (rows, width, segments)}


def forward(devices, config, impl: str, rows: int, width: int, segments: int) -> Program:
    m = _project()
    mesh = Mesh(np.asarray(devices), ("data",))
    params = _abstract_params(config, lambda t: jax.tree.map(
        lambda _: NamedSharding(mesh, P()), t))
    batch = _tokens(rows, width, NamedSharding(mesh, P("data")))

    def fn(params, batch):
        return m.embed(params, batch, config, dtype="bfloat16", attention=impl,
                          segments_per_row=segments)

    flops = forward_flops(config, rows, width, rows * segments, impl)
    return Program("forward", impl, f"{rows}x{width} ({segments} texts/row)",
                   jax.jit(fn, out_shardings=NamedSharding(mesh, P("data"))), (params, batch),
                   mesh, rows * width, flops, {"rows": rows, "width": width,
                                               "segments": segments})


def _optimizer(m):
    return m.make_optimizer(m.OptimizerConfig(learning_rate=1e-4, warmup_steps=0), 1000)


def _fsdp_mesh(m, devices, fsdp: int):
    return m.shd.make_mesh(-1, fsdp, devices=devices)


def distill(devices, student, teacher, impl: str, batch: int, seq: int, fsdp: int,
            remat: bool = False) -> Program:
    m = _project()
    mesh = _fsdp_mesh(m, devices, fsdp)
    tx, schedule = _optimizer(m)
    s_shapes = jax.eval_shape(lambda: m.init_params(student, jax.random.key(0)))
    state, state_sh = m.abstract_sharded_state(s_shapes, tx, mesh)
    teacher_params = _abstract_params(teacher, lambda t: m.shd.param_shardings(t, mesh))
    teacher_sh = jax.tree.map(lambda x: x.sharding, teacher_params)
    cfg = m.StepConfig(student=student, teacher=teacher,
                          loss=m.LossConfig(cosine=1.0, kl=1.0), dtype="bfloat16",
                          attention=impl, remat=remat)
    step = m.make_train_step(cfg, tx, schedule, mesh, state_sh, teacher_sh)
    rows = m.shd.batch_sharding(mesh)
    data = {"student": _tokens(batch, seq, rows), "teacher": _tokens(batch, seq, rows)}
    s_fwd = forward_flops(student, batch, seq, batch, impl)
    t_fwd = forward_flops(teacher, batch, seq, batch, impl)
    s_train = training_flops(s_fwd, impl, extra_forwards=int(remat))
    t_run = training_flops(t_fwd, impl, grad=False)
    flops = {k: s_train[k] + t_run[k] for k in ("useful", "executed")}
    return Program("distill", impl, f"{batch}x{seq} student + teacher, fsdp {fsdp}"
                   + (", remat" if remat else ""), step, (state, teacher_params, data), mesh,
                   batch * seq, flops, {"batch": batch, "seq": seq, "fsdp": fsdp, "remat": remat})


def finetune(devices, config, impl: str, batch: int, seqs: tuple[int, ...], mini: int,
             fsdp: int, remat: bool = False) -> Program:
    m = _project()
    mesh = _fsdp_mesh(m, devices, fsdp)
    tx, schedule = _optimizer(m)
    shapes = jax.eval_shape(lambda: m.init_params(config, jax.random.key(0)))
    state, state_sh = m.abstract_sharded_state(shapes, tx, mesh)
    cfg = m.FinetuneStepConfig(model=config,
                                  loss=m.ContrastiveLossConfig(mini_batch_size=mini),
                                  dtype="bfloat16", attention=impl, remat=remat)
    step = m.make_finetune_step(cfg, tx, schedule, mesh, state_sh, len(seqs))
    rows = m.shd.batch_sharding(mesh)
    columns = [_tokens(batch, t, rows) for t in seqs]
    flops = {"useful": 0.0, "executed": 0.0}
    for t in seqs:
        one = training_flops(forward_flops(config, batch, t, batch, impl), impl,
                             extra_forwards=int(bool(mini and mini < batch)) + int(remat))
        flops = {k: flops[k] + one[k] for k in flops}
    cols = " + ".join(str(t) for t in seqs)
    return Program("finetune", impl, f"{batch} x ({cols}) cached MNRL, mini {mini}, fsdp {fsdp}"
                   + (", remat" if remat else ""), step, (state, columns), mesh,
                   batch * sum(seqs), flops,
                   {"batch": batch, "seqs": list(seqs), "mini_batch": mini, "fsdp": fsdp,
                    "remat": remat})

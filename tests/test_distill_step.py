"""Loss, optimizer, step and data pieces of the distillation loop (torch-free, fast)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tarka_jax.distill.loss import LossConfig, LossConfigError, distill_loss
from tarka_jax.nn.config import DenseSpec, ModelConfig
from tarka_jax.testing.reference import scale_relative_error


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_distill_loss_matches_numpy_formulas():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 24)).astype(np.float32), rng.normal(size=(5, 24)).astype(np.float32)
    cfg = LossConfig(cosine=1.0, mse=2.0, kl=0.5, temperature=0.2, matryoshka_dims=(24, 8))
    loss, terms = distill_loss(jnp.asarray(s), jnp.asarray(t), cfg)
    want = {"cosine": 0.0, "mse": 0.0, "kl": 0.0}
    for m in (24, 8):
        sm, tm = _unit(s[:, :m].astype(np.float64)), _unit(t[:, :m].astype(np.float64))
        want["cosine"] += np.mean(1 - np.sum(sm * tm, -1)) / 2
        want["mse"] += np.mean((sm - tm) ** 2) / 2
        kl = 0.0
        for i in range(5):
            js = [j for j in range(5) if j != i]
            ls = sm[i] @ sm[js].T / 0.2
            lt = tm[i] @ tm[js].T / 0.2
            ps, pt = np.exp(ls - ls.max()), np.exp(lt - lt.max())
            ps, pt = ps / ps.sum(), pt / pt.sum()
            kl += np.sum(pt * np.log(pt / ps)) / 5
        want["kl"] += kl / 2
    for k, v in want.items():
        np.testing.assert_allclose(float(terms[k]), v, rtol=1e-5)
    np.testing.assert_allclose(float(loss), want["cosine"] + 2 * want["mse"] + 0.5 * want["kl"],
                               rtol=1e-5)
    # Identical embeddings: every term is 0 and the gradient finite.
    same_loss, _ = distill_loss(jnp.asarray(s), jnp.asarray(s), cfg)
    assert abs(float(same_loss)) < 1e-6
    g = jax.grad(lambda x: distill_loss(x, jnp.asarray(t), cfg)[0])(jnp.asarray(s))
    assert np.isfinite(np.asarray(g)).all()


def test_distill_loss_dims_are_checked():
    with pytest.raises(LossConfigError, match="24 dims and the teacher to 32"):
        LossConfig().dims(24, 32)
    assert LossConfig(cosine=0.0, kl=1.0).dims(24, 32) == (24,)  # KL works across widths
    assert LossConfig(matryoshka_dims=(16, 8)).dims(24, 32) == (16, 8)
    with pytest.raises(LossConfigError, match=r"\[32\] exceed"):
        LossConfig(matryoshka_dims=(32, 8)).dims(24, 32)
    with pytest.raises(LossConfigError, match="nothing to train"):
        LossConfig(cosine=0, kl=0, mse=0)


def test_distill_optimizer_schedule_and_decay_mask():
    from tarka_jax.train.optim import OptimizerConfig, decay_mask, learning_rate_schedule

    sched = learning_rate_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=4,
                                                   end_lr_ratio=0.1), total_steps=14)
    np.testing.assert_allclose([float(sched(i)) for i in (0, 2, 4, 9, 14)],
                               [0.0, 0.5, 1.0, 0.55, 0.1], atol=1e-6)
    const = learning_rate_schedule(OptimizerConfig(learning_rate=0.3, schedule="constant"), 10)
    assert float(const(0)) == float(const(9)) == pytest.approx(0.3)
    mask = decay_mask({"encoder": {"norm": {"weight": np.zeros(4)},
                                   "embed_tokens": {"embedding": np.zeros((3, 4))}},
                       "dense_0": {"kernel": np.zeros((4, 2)), "bias": np.zeros(2)}})
    assert mask == {"encoder": {"norm": {"weight": False}, "embed_tokens": {"embedding": True}},
                    "dense_0": {"kernel": True, "bias": False}}


def _tiny(vocab, hidden, dense):
    widths = (hidden, *dense)
    return ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=20, num_layers=2,
                       num_heads=2, num_kv_heads=1, head_dim=8, query_pre_attn_scalar=8,
                       layer_types=("sliding_attention", "full_attention"), sliding_window=4,
                       dense=tuple(DenseSpec(a, b, bias=True) for a, b in zip(widths, widths[1:])))


def _batch(rng, vocab, b=8, t=12):
    lengths = rng.integers(2, t + 1, size=b)
    seg = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    return {"input_ids": np.where(seg > 0, rng.integers(1, vocab, (b, t)), 0).astype(np.int32),
            "segment_ids": seg, "positions": np.where(seg > 0, np.arange(t)[None], 0)
            .astype(np.int32)}


@pytest.fixture(scope="module")
def pair():
    from tarka_jax.nn.encoder import init_params

    s_cfg, t_cfg = _tiny(37, 16, (12,)), _tiny(41, 24, (12,))
    rng = np.random.default_rng(0)
    batch = {"student": _batch(rng, 37), "teacher": _batch(rng, 41)}
    return (s_cfg, jax.device_get(init_params(s_cfg, jax.random.key(0))),
            t_cfg, jax.device_get(init_params(t_cfg, jax.random.key(1))), batch)


def _run(pair, *, loss, accumulation=1, dtype="float32", remat=False, steps=2, **optimizer):
    from tarka_jax.distill.step import StepConfig, make_train_step
    from tarka_jax.train import sharding as shd
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer
    from tarka_jax.train.state import create_state, shard_params

    s_cfg, s_params, t_cfg, t_params, batch = pair
    tx, sched = make_optimizer(OptimizerConfig(learning_rate=1e-2, accumulation_steps=accumulation,
                                               **optimizer), steps)
    mesh = shd.make_mesh(1, 1, devices=jax.devices()[:1])
    state, state_sh = create_state(s_params, tx, mesh)
    teacher, t_sh = shard_params(t_params, mesh)
    cfg = StepConfig(s_cfg, t_cfg, loss, dtype=dtype, remat=remat,
                     accumulation_steps=accumulation)
    step = make_train_step(cfg, tx, sched, mesh, state_sh, t_sh)
    for _ in range(steps):
        state, metrics = step(state, teacher, batch)
    return jax.device_get(state), jax.device_get(metrics)


def test_distill_accumulation_equals_full_batch_for_per_text_losses(pair):
    # Cosine and MSE are means over texts, so 2 micro-batches of 4 == one batch of 8.
    loss = LossConfig(cosine=1.0, mse=1.0, kl=0.0)
    full, m_full = _run(pair, loss=loss)
    micro, m_micro = _run(pair, loss=loss, accumulation=2)
    np.testing.assert_allclose(m_micro["loss"], m_full["loss"], rtol=1e-5)
    # Compare the two steps' parameter *updates*, relative to their scale: Adam divides by
    # sqrt(v) + eps, so an element whose gradient is ~eps gets an update whose last digits
    # depend on the summation order (an absolute 1e-6 bound failed on one such element
    # by 1.19e-6, on main too). A dropped or doubled micro-batch changes updates by O(1).
    initial = jax.tree.leaves(pair[1])
    for a, b, p0 in zip(jax.tree.leaves(micro["params"]), jax.tree.leaves(full["params"]),
                        initial):
        assert scale_relative_error(a - p0, b - p0) <= 1e-3
    assert int(micro["step"]) == 2


@pytest.mark.slow  # runs in leg 1 only (CI time budget)
def test_distill_bf16_remat_step_close_to_float32(pair):
    loss = LossConfig()
    _, m32 = _run(pair, loss=loss, steps=1)
    bf16, m16 = _run(pair, loss=loss, dtype="bfloat16", remat=True, steps=1)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(bf16["params"]))  # f32 master
    np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=2e-2)
    np.testing.assert_allclose(m16["grad_norm"], m32["grad_norm"], rtol=5e-2)


def test_distill_data_is_deterministic_and_resumable(tmp_path, tiny_tokenizers):
    from tarka_jax.distill.data import PairTokenizer, TextBatches
    from tarka_jax.train.data import read_corpus

    texts = [f"the planet {w} has a moon and a ring" * (1 + i % 4)
             for i, w in enumerate(["mars", "venus", "jupiter", "saturn", "moon", "sun", "star", "orbit"] * 3)]
    (tmp_path / "a.txt").write_text("\n".join(texts[:12]) + "\n\n")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[12:]))
    corpus = read_corpus([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")], "text")
    assert corpus == texts
    s_tok, t_tok = tiny_tokenizers
    pair = PairTokenizer(s_tok, t_tok, student_buckets=(8, 16), teacher_buckets=(8, 16))

    def batches(it, n):
        return [np.concatenate([b["student"]["input_ids"].ravel(),
                                b["teacher"]["input_ids"].ravel()]) for b in
                (next(it) for _ in range(n))]

    a = TextBatches(corpus, pair, 5, seed=3)
    first = batches(a, 7)  # 4 batches per epoch: crosses an epoch
    b = TextBatches(corpus, pair, 5, seed=3)
    batches(b, 3)
    c = TextBatches(corpus, pair, 5, seed=3)
    c.set_state(json.loads(json.dumps(b.get_state())))
    for x, y in zip(first[3:], batches(c, 4)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="seed"):
        TextBatches(corpus, pair, 5, seed=4).set_state(b.get_state())
    # Truncation: both tokenizers see the same character span.
    long = "Jupiter, the largest planet in our solar system, has a prominent red spot " * 3
    pair = PairTokenizer(s_tok, t_tok, student_buckets=(16,), teacher_buckets=(16,))
    pair.teacher.set_max_seq_length(32)  # the teacher alone would keep more text
    out = pair([long])
    decoded = [tok.backend.decode(out[name]["input_ids"][0][out[name]["segment_ids"][0] > 0]
                                  .tolist())  # the text, not the padding after it
               for name, tok in (("student", s_tok), ("teacher", t_tok))]
    assert decoded[0] == decoded[1] and 0 < len(decoded[0]) < len(long) // 3, decoded
    # Two hosts split the global batch's rows.
    h0 = TextBatches(corpus, pair, 4, seed=1, process_index=0, process_count=2)
    h1 = TextBatches(corpus, pair, 4, seed=1, process_index=1, process_count=2)
    whole = TextBatches(corpus, pair, 4, seed=1)
    w, x0, x1 = next(whole), next(h0), next(h1)
    np.testing.assert_array_equal(np.concatenate([x0["student"]["input_ids"],
                                                  x1["student"]["input_ids"]]),
                                  w["student"]["input_ids"])


def test_distill_parquet_is_read(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from tarka_jax.train.data import read_texts

    pq.write_table(pa.table({"body": ["one text", "", "two texts"]}), tmp_path / "x.parquet")
    assert read_texts(str(tmp_path / "x.parquet"), "body") == ["one text", "two texts"]


@pytest.fixture(scope="module")
def tiny_tokenizers(tmp_path_factory):
    from tarka_jax.testing.reference import train_tokenizer
    from tarka_jax.text.tokenizer import TextTokenizer

    out = []
    for vocab in (120, 150):
        folder = tmp_path_factory.mktemp(f"tok{vocab}")
        train_tokenizer(vocab, str(folder))
        out.append(TextTokenizer.from_folder(str(folder), max_seq_length=16))
    return out


def test_state_shardings_give_optimizer_moments_their_parameter_sharding(pair):
    """Derived from the optimizer's structure (optax.tree_map_params): Adam's mu and nu take
    each parameter's sharding, every other optimizer leaf (counts) is replicated."""
    import optax

    from tarka_jax.train import sharding as shd
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer
    from tarka_jax.train.state import abstract_state, state_shardings

    s_params = pair[1]
    mesh = shd.make_mesh(1, 1, devices=jax.devices()[:1])
    for clip in (0.0, 1.0):  # adamw alone, and chained after clip_by_global_norm
        tx, _ = make_optimizer(OptimizerConfig(clip_norm=clip), 4)
        sh = state_shardings(s_params, tx, mesh)
        p_leaves = jax.tree.leaves(sh["params"])
        adam = [s for s in jax.tree.leaves(sh["opt_state"], is_leaf=lambda x: isinstance(
            x, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
        assert len(adam) == 1
        for moments in (adam[0].mu, adam[0].nu):
            assert all(a is b for a, b in zip(jax.tree.leaves(moments), p_leaves))
        assert adam[0].count.is_fully_replicated
        # The shardings tree has the abstract state's structure exactly.
        structure = jax.tree.structure(abstract_state(s_params, tx))
        assert jax.tree.structure(sh) == structure


def test_frozen_parameters_stay_put_and_the_rest_trains(pair):
    """optimizer.freeze: matching params bit-identical after steps, no Adam moments for
    them, shardings still the abstract state's structure; the others move."""
    from tarka_jax.train import sharding as shd
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer
    from tarka_jax.train.state import abstract_state, state_shardings

    start = pair[1]
    state, _ = _run(pair, loss=LossConfig(), freeze=("encoder/embed_tokens", r"dense_0/bias$"))
    flat = lambda t: {jax.tree_util.keystr(k): np.asarray(v)  # noqa: E731
                      for k, v in jax.tree_util.tree_flatten_with_path(t)[0]}
    before, after = flat(start), flat(state["params"])
    frozen = [k for k in before if "embed_tokens" in k or k.endswith("['dense_0']['bias']")]
    assert len(frozen) == 2
    for k in before:
        same = np.array_equal(before[k], after[k])
        assert same == (k in frozen), k
    tx, _ = make_optimizer(OptimizerConfig(freeze=("embed_tokens",)), 4)
    mesh = shd.make_mesh(1, 1, devices=jax.devices()[:1])
    sh = state_shardings(start, tx, mesh)
    assert jax.tree.structure(sh) == jax.tree.structure(abstract_state(start, tx))
    n_params = len(jax.tree.leaves(start))
    assert len(jax.tree.leaves(abstract_state(start, tx)["opt_state"])) == 2 * (n_params - 1) + 2


def test_freeze_patterns_are_checked(pair):
    from tarka_jax.train.optim import OptimizerConfig, make_optimizer

    with pytest.raises(ValueError, match="not a regular expression"):
        OptimizerConfig(freeze=("encoder/(",))
    tx, _ = make_optimizer(OptimizerConfig(freeze=("encoder/embed_token$",)), 4)
    with pytest.raises(ValueError, match=r"\['encoder/embed_token\$'\] match no parameter"):
        tx.init(pair[1])

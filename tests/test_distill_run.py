"""The distillation loop end to end on tiny random models (torch-free except export).

Models come from :func:`tarka_jax.testing.tiny.write_tiny_models` (JAX-initialised
Flax folders with their own tokenizers), data from ``examples/data``.
"""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest

from tarka_jax.cli import main as cli_main

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TRAIN = os.path.join(EXAMPLES, "data", "tiny_train.txt")
EVAL = os.path.join(EXAMPLES, "data", "tiny_eval.txt")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tarka_jax.testing.tiny import write_tiny_models

    return write_tiny_models(str(tmp_path_factory.mktemp("tiny_models")))


def _config_text(teacher, student, train, *, steps, extra="", eval_files=(), batch=8,
                 lr=3e-3, log_every=1, every=3, loss="cosine = 1.0\nkl = 1.0"):
    return textwrap.dedent(f"""\
        [model]
        teacher = {json.dumps(teacher)}
        student = {json.dumps(student)}
        [data]
        train = {json.dumps([train])}
        eval = {json.dumps(list(eval_files))}
        batch_size = {batch}
        max_seq_length = 32
        teacher_max_seq_length = 32
        buckets = [16, 32]
        [loss]
        """) + loss + textwrap.dedent(f"""
        [optimizer]
        learning_rate = {lr}
        warmup_steps = 2
        [train]
        steps = {steps}
        log_every = {log_every}
        [checkpoint]
        every = {every}
        keep = 2
        [logging]
        progress = false
        """) + extra


def _load(tmp_path, text, name="run.toml"):
    from tarka_jax.distill.config import load_config

    path = tmp_path / name
    path.write_text(text)
    return load_config(str(path)), str(path)


def _params(run_dir, step):
    import jax

    from tarka_jax.distill.export import load_run_step

    return jax.tree_util.tree_flatten_with_path(load_run_step(run_dir, step)[1])[0]


@pytest.mark.slow  # leg 1 only (the loop on the newer jax: test_distill_cli_learns_the_teacher)
def test_distill_resume_mid_epoch_is_bit_identical(tiny_models, tmp_path):
    from tarka_jax.distill.run import train
    from tarka_jax.train.metrics import read_metrics

    teacher, student = tiny_models
    small = tmp_path / "small.txt"  # 36 texts, batch 8: 4 batches an epoch
    small.write_text("".join(open(TRAIN).readlines()[:36]))
    config, _ = _load(tmp_path, _config_text(teacher, student, str(small), steps=10))

    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    train(config, whole)
    train(config, split, max_steps=5)  # stops at epoch 1, batch 1 of 4
    with open(os.path.join(split, "checkpoints", "5", "data", "metadata"), encoding="utf-8") \
            as f:
        assert json.load(f)["epoch"] == 1
    train(config, split, resume=True)

    for (path, a), (_, b) in zip(_params(whole, 10), _params(split, 10)):
        np.testing.assert_array_equal(a, b, err_msg=str(path))
    losses = {r["step"]: r["loss"] for r in read_metrics(whole)}
    resumed = {r["step"]: r["loss"] for r in read_metrics(split)}
    assert sorted(resumed) == list(range(1, 11))
    assert resumed == losses  # same batches in the same order, bit for bit

    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(config, whole)


def test_distill_cli_learns_the_teacher(tiny_models, tmp_path, capsys):
    from tarka_jax.train.metrics import read_metrics

    teacher, student = tiny_models
    _, path = _load(tmp_path, _config_text(teacher, student, TRAIN, steps=60, batch=16,
                                           eval_files=[EVAL], log_every=10, every=60))
    workdir = str(tmp_path / "run")
    assert cli_main(["distill", "--config", path, "--workdir", workdir]) == 0
    assert "step 60" in capsys.readouterr().out
    records = read_metrics(workdir)
    evals = [r["eval_cosine"] for r in records if "eval_cosine" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    assert records[0]["step"] == 0 and len(evals) == 2
    assert evals[-1] > evals[0] + 0.1, evals
    assert losses[-1] < losses[0], losses
    for key in ("cosine", "kl", "mse", "grad_norm", "update_norm", "lr", "tokens_per_s"):
        assert key in records[-1], key


@pytest.mark.torch
def test_distill_exported_step_loads_in_sentence_transformers(tiny_models, tmp_path):
    import jax
    from sentence_transformers import SentenceTransformer

    from tarka_jax.convert.flax_to_hf import flax_to_hf
    from tarka_jax.distill.export import load_run_step
    from tarka_jax.distill.run import train
    from tarka_jax.nn.encoder import embed
    from tarka_jax.text.tokenizer import TextTokenizer

    teacher, student = tiny_models
    config, _ = _load(tmp_path, _config_text(teacher, student, TRAIN, steps=4, every=2))
    run = str(tmp_path / "run")
    train(config, run)
    out = flax_to_hf(run, str(tmp_path / "st"), step=2)
    cfg, params, _, tok_folder = load_run_step(run, 2)
    first = jax.device_get(load_run_step(run, 4)[1])
    assert not np.array_equal(first["dense_0"]["kernel"], params["dense_0"]["kernel"])

    texts = open(EVAL).read().splitlines()[:6]
    ours = np.asarray(embed(params, TextTokenizer.from_folder(tok_folder)(texts), cfg))[:, 0]
    theirs = SentenceTransformer(out, device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours, atol=2e-5)


def _heldout_files(tmp_path):
    """(config lines, held-out pairs, STS rows): 24 held-out docstring pairs (5 train rows
    the ``where`` filter drops) and 24 STS rows built from them."""
    import gzip

    from tarka_jax.testing.reference import docstring_sts_rows

    with gzip.open(os.path.join(EXAMPLES, "data", "stdlib", "pairs.jsonl.gz"), "rt",
                   encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    held = [r for r in records if r["split"] == "heldout"][:24]
    dropped = [r for r in records if r["split"] == "train"][:5]
    sts_rows = docstring_sts_rows(held[:12])
    pairs, sts = tmp_path / "pairs.jsonl", tmp_path / "sts.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in dropped + held))
    sts.write_text("".join(json.dumps(r) + "\n" for r in sts_rows))
    lines = textwrap.dedent(f"""\
        eval_pairs = [{json.dumps(str(pairs))}]
        eval_pairs_columns = ["summary", "body"]
        eval_pairs_where = {{split = "heldout"}}
        eval_sts = [{json.dumps(str(sts))}]
        eval_batch_size = 16
        """)
    return lines, held, sts_rows


def test_run_step_exports_without_training_code_and_round_trips(tiny_models, jax_only_model,
                                                                tmp_path):
    """run -> ST folder (flax_to_hf, in a process that never imports distill) -> Embedder
    gives the run step's embeddings (<= 1e-6: a storage round trip, nothing recomputed), and
    the held-out retrieval / STS the loop logged (eval_pairs, eval_sts) is what
    ``tarka_jax.evaluation.scores`` gives on that Embedder (<= 1e-6), with the student's query /
    document / STS prompts (EmbeddingGemma's: the student is ``jax_only_model``)."""
    import subprocess
    import sys

    from tarka_jax import Embedder
    from tarka_jax.convert import open_model
    from tarka_jax.distill.run import train
    from tarka_jax.evaluation.scores import evaluate_retrieval, evaluate_sts
    from tarka_jax.text.tokenizer import TextTokenizer
    from tarka_jax.train.metrics import read_metrics

    lines, held, sts_rows = _heldout_files(tmp_path)
    text = _config_text(tiny_models[0], jax_only_model, TRAIN, steps=2, every=1)
    text = text.replace("buckets = [16, 32]\n", "buckets = [16, 32]\n" + lines, 1)
    config, _ = _load(tmp_path, text)
    run = str(tmp_path / "run")
    train(config, run)
    out = str(tmp_path / "st")
    script = ("import sys; from tarka_jax.convert.flax_to_hf import flax_to_hf; "
              f"flax_to_hf({run!r}, {out!r}, step=2); "
              "bad = sorted(m for m in sys.modules if m.startswith(('tarka_jax.distill', "
              "'tarka_jax.recipe', 'optax'))); assert not bad, bad")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    ck = open_model(run, step=2)
    assert ck.kind == "run" and ck.step == 2
    texts = open(EVAL).read().splitlines()[:6]
    step_model = Embedder(ck.config, ck.params, TextTokenizer.from_folder(ck.folder),
                          prompts=ck.meta.prompts)
    exported = Embedder.from_pretrained(out)
    assert np.abs(exported.encode(texts) - step_model.encode(texts)).max() <= 1e-6

    logged = {r["step"]: r for r in read_metrics(run) if "eval_mrr" in r}
    assert sorted(logged) == [0, 2]  # train.eval_every = 0: the start and the end
    start = Embedder.from_pretrained(jax_only_model)
    assert np.abs(start.encode(texts) - exported.encode(texts)).max() > 1e-3  # it trained
    for step, model in [(0, start), (2, exported)]:
        want = evaluate_retrieval(model, [r["summary"] for r in held],
                                  [r["body"] for r in held], recall_at=(1, 10))
        want.update(evaluate_sts(model, [r["sentence1"] for r in sts_rows],
                                 [r["sentence2"] for r in sts_rows],
                                 [r["score"] for r in sts_rows]))
        for key in ("eval_ndcg@10", "eval_mrr@10", "eval_mrr", "eval_recall@1",
                    "eval_recall@10", "eval_sts_spearman"):
            assert abs(logged[step][key] - want[key]) <= 1e-6, (step, key, logged[step][key],
                                                                 want[key])


def test_distill_config_errors_name_the_key(tmp_path):
    from tarka_jax.distill.config import DistillConfigError

    good = _config_text("t", "s", TRAIN, steps=3)
    for text, needle in [
        (good.replace("kl = 1.0", "kll = 1.0"), "loss.kll"),
        (good.replace('teacher = "t"\n', ""), "model.teacher"),
        (good.replace("steps = 3", 'steps = "3"'), "train.steps"),
        (good + "[bogus]\nx = 1\n", "bogus"),
        (good.replace("batch_size = 8", "batch_size = 1"), "batch_size"),
        (good.replace("buckets = [16, 32]", 'buckets = [16, 32]\neval_pairs_columns = ["q"]'),
         "data.eval_pairs_columns needs 2 distinct fields"),
        (good.replace("buckets = [16, 32]", 'buckets = [16, 32]\neval_sts_where = 1'),
         "data.eval_sts_where must be a table"),
    ]:
        with pytest.raises(DistillConfigError, match=needle.replace(".", r"\.")):
            _load(tmp_path, text)
    with pytest.raises(DistillConfigError, match="temperature"):
        _load(tmp_path, good.replace("kl = 1.0", "kl = 1.0\ntemperature = 0"))


def test_heldout_files_errors_name_file_line_and_field(tmp_path):
    from tarka_jax.train.data import DataError
    from tarka_jax.train.heldout import read_pairs, read_sts

    sts = tmp_path / "sts.jsonl"
    sts.write_text('{"a": "x", "b": "y", "score": 1}\n{"a": "x", "b": "z", "score": "high"}\n')
    with pytest.raises(DataError, match=r"sts.jsonl:2 needs a numeric 'score' field"):
        read_sts([str(sts)], ["a", "b", "score"], {}, "data.eval_sts")
    with pytest.raises(DataError, match=r"sts.jsonl:1 needs non-empty string field\(s\) "
                                        r"\['query'\] \(data.eval_pairs_columns"):
        read_pairs([str(sts)], ["query", "b"], {}, "data.eval_pairs")
    with pytest.raises(DataError, match=r"hold no rows where \{'split': 'heldout'\}"):
        read_pairs([str(sts)], ["a", "b"], {"split": "heldout"}, "data.eval_pairs")
    with pytest.raises(DataError, match="at least 2 rows"):
        read_sts([str(sts)], ["a", "b", "score"], {"b": "y"}, "data.eval_sts")
    assert read_pairs([str(sts)], ["a", "b"], {}, "data.eval_pairs") == (["x", "x"], ["y", "z"])


def test_distill_errors_before_compute(tiny_models, tmp_path):
    from tarka_jax.distill.config import DistillConfigError
    from tarka_jax.distill.run import train
    from tarka_jax.testing.tiny import tiny_config, write_model

    teacher, student = tiny_models
    config, _ = _load(tmp_path, _config_text(teacher, student, str(tmp_path / "nope.txt"),
                                             steps=3))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        train(config, str(tmp_path / "w1"))
    assert not os.path.exists(tmp_path / "w1")

    wide = str(tmp_path / "wide_teacher")
    write_model(wide, tiny_config(307, 40, 1, (32,)), seed=3)
    config, _ = _load(tmp_path, _config_text(wide, student, TRAIN, steps=3))
    with pytest.raises(DistillConfigError, match="24 dims and the teacher to 32"):
        train(config, str(tmp_path / "w2"))
    assert not os.path.exists(tmp_path / "w2")
    # Matryoshka dims both models have make the same pair valid for cosine ...
    config, _ = _load(tmp_path, _config_text(wide, student, TRAIN, steps=3,
                                             loss="cosine = 1.0\nmatryoshka_dims = [48]"))
    with pytest.raises(DistillConfigError, match=r"matryoshka_dims \[48\] exceed"):
        train(config, str(tmp_path / "w3"))


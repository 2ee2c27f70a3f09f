"""The fine-tuning loop end to end on a tiny random model (torch-free except export).

The model is the ``jax_only_model`` fixture (a sentence-transformers folder with
EmbeddingGemma's prompts, written without torch); the pairs are the first rows
of the committed stdlib docstring corpus.
"""

from __future__ import annotations

import gzip
import json
import os
import textwrap

import numpy as np
import pytest

from tarka_jax.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = os.path.join(ROOT, "examples", "data", "stdlib", "pairs.jsonl.gz")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """60 train and 20 held-out (summary, body) pairs as .jsonl; sts.jsonl beside it."""
    from tarka_jax.testing.reference import docstring_sts_rows

    with gzip.open(PAIRS, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    train = [r for r in records if r["split"] == "train"][:60]
    held = [r for r in records if r["split"] == "heldout"][:20]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in train + held))
    (path.parent / "sts.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                   for r in docstring_sts_rows(train[:16])))
    return str(path)


def _config_text(model, pairs, *, steps, batch=8, every=3, log_every=1, eval_where=None,
                 extra_data="", loss=""):
    evaluate = "" if eval_where is None else (
        f'eval = [{json.dumps(pairs)}]\neval_where = {{split = "{eval_where}"}}\n')
    return textwrap.dedent(f"""\
        [model]
        model = {json.dumps(model)}
        [data]
        train = [{json.dumps(pairs)}]
        columns = ["summary", "body"]
        train_where = {{split = "train"}}
        prompt_names = {{summary = "query", body = "document"}}
        batch_size = {batch}
        max_seq_length = 32
        buckets = [16, 32]
        """) + evaluate + extra_data + "[loss]\n" + loss + textwrap.dedent(f"""
        [optimizer]
        learning_rate = 3e-3
        warmup_steps = 2
        [train]
        steps = {steps}
        log_every = {log_every}
        [checkpoint]
        every = {every}
        keep = 2
        [logging]
        progress = false
        """)


def _load(tmp_path, text, name="run.toml"):
    from tarka_jax.finetune.config import load_config

    path = tmp_path / name
    path.write_text(text)
    return load_config(str(path)), str(path)


def _params(run_dir, step):
    import jax

    from tarka_jax.distill.export import load_run_step

    return jax.tree_util.tree_flatten_with_path(load_run_step(run_dir, step)[1])[0]


@pytest.mark.slow  # leg 1 only (the loop on the newer jax: test_finetune_cli_learns_the_pairs)
def test_finetune_resume_mid_epoch_is_bit_identical(jax_only_model, pairs_file, tmp_path):
    from tarka_jax.finetune.run import train
    from tarka_jax.train.metrics import read_metrics
    from tarka_jax.train.resume_check import read_changes

    config, _ = _load(tmp_path, _config_text(jax_only_model, pairs_file, steps=10))
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    train(config, whole)
    train(config, split, max_steps=9)  # 60 rows, batch 8: at most 7 batches an epoch
    with open(os.path.join(split, "checkpoints", "9", "data", "metadata"), encoding="utf-8") \
            as f:
        assert json.load(f)["epoch"] == 1
    train(config, split, resume=True)

    for (path, a), (_, b) in zip(_params(whole, 10), _params(split, 10)):
        np.testing.assert_array_equal(a, b, err_msg=str(path))
    losses = {r["step"]: r["loss"] for r in read_metrics(whole) if "loss" in r}
    resumed = {r["step"]: r["loss"] for r in read_metrics(split) if "loss" in r}
    assert sorted(resumed) == list(range(1, 11))
    assert resumed == losses  # same batches in the same order, bit for bit

    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(config, whole)
    changed, _ = _load(tmp_path, _config_text(jax_only_model, pairs_file, steps=12),
                       "changed.toml")
    with pytest.raises(ValueError, match=r"differs from the run's \(train.steps: 10 -> 12\)"):
        train(changed, split, resume=True)
    train(changed, split, resume=True, allow_config_change=True)  # recorded, not rewritten
    (change,) = read_changes(split)
    assert change["step"] == 10 and change["changes"]["train.steps"] == {"old": 10, "new": 12}


def test_finetune_cli_learns_the_pairs(jax_only_model, pairs_file, tmp_path, capsys):
    from tarka_jax import Embedder
    from tarka_jax.convert.flax_to_hf import flax_to_hf
    from tarka_jax.evaluation.scores import evaluate_retrieval, evaluate_sts
    from tarka_jax.finetune.data import read_rows
    from tarka_jax.testing.demo import retrieval_metrics
    from tarka_jax.train.metrics import read_metrics

    # Evaluated on the training pairs: the loop must fit them (generalisation is the
    # demo's BENCHMARKS number, not a unit test's).
    sts = os.path.join(os.path.dirname(pairs_file), "sts.jsonl")
    _, path = _load(tmp_path, _config_text(
        jax_only_model, pairs_file, steps=40, batch=16, every=40, log_every=10,
        eval_where="train", extra_data=f"eval_batch_size = 32\neval_sts = [{json.dumps(sts)}]\n"))
    workdir = str(tmp_path / "run")
    assert cli_main(["finetune", "--config", path, "--workdir", workdir]) == 0
    out = capsys.readouterr().out
    assert "step 40" in out and "eval_ndcg@10=" in out and "eval_sts_spearman=" in out
    records = read_metrics(workdir)
    evals = [r["eval_mrr"] for r in records if "eval_mrr" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    assert records[0]["step"] == 0 and len(evals) == 2
    assert evals[-1] > evals[0] + 0.2, evals
    assert losses[-1] < 0.5 * losses[0], losses
    for key in ("grad_norm", "update_norm", "param_norm", "lr", "tokens_per_s", "epoch"):
        assert key in records[-1], key

    # The logged scores are the exported model's, as `tarka-jax evaluate --pairs` computes
    # them (Embedder.encode_query / encode_document / the STS prompt), and eval_mrr is the
    # demo's full MRR (ties against the model) on the same embeddings.
    model = Embedder.from_pretrained(flax_to_hf(workdir, str(tmp_path / "st")))
    rows = read_rows([pairs_file], ["summary", "body"], {"split": "train"})
    expected = evaluate_retrieval(model, [r[0] for r in rows], [r[1] for r in rows],
                                  recall_at=(1, 10))
    sts_records = [json.loads(line) for line in open(sts)]
    expected.update(evaluate_sts(model, [r["sentence1"] for r in sts_records],
                                 [r["sentence2"] for r in sts_records],
                                 [r["score"] for r in sts_records]))
    for key in ("eval_ndcg@10", "eval_mrr@10", "eval_mrr", "eval_recall@1", "eval_recall@10",
                "eval_sts_spearman"):
        assert abs(records[-1][key] - expected[key]) <= 1e-6, (key, records[-1][key],
                                                                expected[key])
    demo_mrr = retrieval_metrics(model.encode_query([r[0] for r in rows]),
                                 model.encode_document([r[1] for r in rows]))["mrr"]
    assert abs(records[-1]["eval_mrr"] - demo_mrr) <= 1e-6
    assert cli_main(["finetune", "--config", path, "--workdir", workdir,
                     "--allow-config-change"]) == 2
    assert "only applies with --resume" in capsys.readouterr().err


@pytest.mark.torch
def test_finetune_exported_step_loads_in_sentence_transformers(jax_only_model, pairs_file,
                                                               tmp_path):
    from sentence_transformers import SentenceTransformer

    from tarka_jax import Embedder
    from tarka_jax.convert.flax_to_hf import flax_to_hf
    from tarka_jax.finetune.run import train

    config, _ = _load(tmp_path, _config_text(jax_only_model, pairs_file, steps=3, every=3))
    run = str(tmp_path / "run")
    train(config, run)
    out = flax_to_hf(run, str(tmp_path / "st"))  # latest step by default
    texts = ["Return the first release.", "x", "an example body of a docstring"]
    ours = Embedder.from_pretrained(out).encode_query(texts, pack=False)
    theirs = SentenceTransformer(out, device="cpu").encode_query(texts, convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours, atol=2e-5)
    start = Embedder.from_pretrained(jax_only_model).encode_query(texts, pack=False)
    assert np.abs(start - ours).max() > 1e-3  # the exported model is the trained one


def test_finetune_config_errors_name_the_key(jax_only_model, pairs_file, tmp_path):
    from tarka_jax.finetune.config import FinetuneConfigError
    from tarka_jax.finetune.run import train

    good = _config_text("m", pairs_file, steps=3)
    for text, needle in [
        (good.replace("[loss]\n", "[loss]\nscal = 1\n"), "loss.scal"),
        (good.replace('model = "m"\n', ""), "model.model"),
        (good.replace('columns = ["summary", "body"]', 'columns = ["summary"]'),
         "data.columns"),
        (good.replace("body = \"document\"", "text = \"document\""), "data.prompt_names"),
        (good.replace("[loss]\n", "[loss]\nmini_batch_size = 3\n"), "mini_batch_size"),
        (good.replace("warmup_steps = 2", "accumulation_steps = 2"), "GradCache"),
    ]:
        with pytest.raises(FinetuneConfigError, match=needle.replace(".", r"\.")):
            _load(tmp_path, text)
    config, _ = _load(tmp_path, _config_text(jax_only_model, pairs_file, steps=3).replace(
        'summary = "query"', 'summary = "querry"'))
    with pytest.raises(FinetuneConfigError, match="'querry' is not a prompt of model"):
        train(config, str(tmp_path / "w1"))
    config, _ = _load(tmp_path, _config_text(jax_only_model, pairs_file, steps=3,
                                             loss="matryoshka_dims = [32, 8]\n"))
    with pytest.raises(FinetuneConfigError, match="exceed the model's embedding dim 24"):
        train(config, str(tmp_path / "w2"))
    assert not os.path.exists(tmp_path / "w1") and not os.path.exists(tmp_path / "w2")


@pytest.mark.slow  # a separate process that compiles the step: ~30 s here
def test_finetune_survives_sigkill(jax_only_model, pairs_file, tmp_path):
    """SIGKILL after a checkpoint (maybe mid-save of the next), then --resume == a whole run."""
    import signal
    import subprocess
    import sys
    import time

    from tarka_jax.finetune.run import train

    config, path = _load(tmp_path, _config_text(jax_only_model, pairs_file, steps=16, every=2))
    killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
    proc = subprocess.Popen([sys.executable, "-m", "tarka_jax", "finetune", "--config", path,
                             "--workdir", killed], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    first = os.path.join(killed, "checkpoints", "4")  # orbax renames it into place when complete
    deadline = time.monotonic() + 600  # a hang guard, not a timing assertion
    while not os.path.isdir(first) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert train(config, killed, resume=True)["step"] == 16
    train(config, whole)
    for (p, a), (_, b) in zip(_params(whole, 16), _params(killed, 16)):
        np.testing.assert_array_equal(a, b, err_msg=str(p))

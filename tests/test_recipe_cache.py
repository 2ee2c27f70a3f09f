"""cache-teacher, distillation from a cache, prompt mixes and evaluate, from the CLI."""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TRAIN = os.path.join(EXAMPLES, "data", "tiny_train.txt")
EVAL = os.path.join(EXAMPLES, "data", "tiny_eval.txt")
MIX = "none=2,query=1,document=1"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tarka_jax.testing.tiny import write_tiny_models

    return write_tiny_models(str(tmp_path_factory.mktemp("recipe_models")))


def _short_lines(src, n):
    """Texts no tokenizer truncates at 32 tokens (then a cache equals the online teacher)."""
    with open(src, encoding="utf-8") as f:
        lines = [t for t in f if t.strip() and len(t.split()) <= 9]
    assert len(lines) >= n
    return "".join(lines[:n])


def _small_corpus(tmp_path, n=48):
    path = tmp_path / "train.txt"
    path.write_text(_short_lines(TRAIN, n))
    return str(path)


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "eval.txt"
    path.write_text(_short_lines(EVAL, 17))
    return str(path)


def _config(path, *, student, train, teacher_line, steps=6, extra_model="", loss=None,
            mix=True, eval_file=EVAL):
    mix_table = "[data.prompt_mix]\nnone = 2\nquery = 1\ndocument = 1\n" if mix else ""
    path.write_text(textwrap.dedent(f"""\
        [model]
        student = {json.dumps(student)}
        {teacher_line}
        {extra_model}
        [data]
        train = {json.dumps([train])}
        eval = {json.dumps([eval_file])}
        batch_size = 8
        max_seq_length = 32
        teacher_max_seq_length = 32
        buckets = [16, 32]
        [loss]
        {loss or "cosine = 1.0"}
        [optimizer]
        learning_rate = 3e-3
        warmup_steps = 1
        [train]
        steps = {steps}
        log_every = 3
        eval_every = 3
        [checkpoint]
        every = {steps}
        [logging]
        progress = false
        """) + mix_table)
    return str(path)


def test_prompt_mix_is_deterministic_and_shared_by_both_models(tiny_models):
    from tarka_jax.distill.data import PairTokenizer
    from tarka_jax.text.prompts import TASK_PROMPTS, assign_prompts, check_mix, prompt_strings
    from tarka_jax.text.tokenizer import TextTokenizer

    mix = {"none": 2, "query": 1, "document": 1}
    names, a = assign_prompts(400, mix, seed=5)
    _, b = assign_prompts(400, mix, seed=5)
    _, c = assign_prompts(400, mix, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and names == ["document", "none", "query"]
    assert abs(np.mean(a == names.index("none")) - 0.5) < 0.1
    with pytest.raises(ValueError, match="unknown prompts"):
        check_mix({"qurey": 1}, TASK_PROMPTS)
    teacher, student = tiny_models
    s_tok = TextTokenizer.from_folder(student, 32)
    t_tok = TextTokenizer.from_folder(teacher, 32)
    pair = PairTokenizer(s_tok, t_tok, student_buckets=(32,), teacher_buckets=(32,))
    texts = ["mars is red", "the moon"]
    prompts = prompt_strings(["none", "query"], np.array([1, 0]), TASK_PROMPTS)
    out = pair(texts, prompts)
    for name, tok in (("student", s_tok), ("teacher", t_tok)):
        decoded = tok.backend.decode(out[name]["input_ids"][0].tolist())
        assert decoded.startswith("task : search result | query : mars"), decoded
        assert tok.backend.decode(out[name]["input_ids"][1].tolist()) == "the moon"


@pytest.mark.slow  # leg 1 only (CI budget): a full cache-then-distill run
def test_cache_teacher_then_distill_from_the_cache(tiny_models, eval_file, tmp_path, capsys):
    from tarka_jax.cli import main
    from tarka_jax.recipe.teacher_cache import TeacherCache
    from tarka_jax.train.metrics import read_metrics

    teacher, student = tiny_models
    train = _small_corpus(tmp_path)
    cache = str(tmp_path / "cache")
    assert main(["cache-teacher", "--teacher", teacher, "--out", cache, "--train", train,
                 "--eval", eval_file, "--prompt-mix", MIX, "--max-seq-length", "32"]) == 0
    assert "cached train 48, eval" in capsys.readouterr().out
    again = ["cache-teacher", "--teacher", teacher, "--out", cache, "--train", train,
             "--eval", eval_file, "--prompt-mix", MIX, "--max-seq-length", "32"]
    assert main(again) == 2  # an existing cache is never overwritten silently (before any work)
    assert "exists and is not empty" in capsys.readouterr().err
    c = TeacherCache(cache)
    assert c.manifest["backend"] == "jax" and c.embeddings("train").shape == (48, 24)

    config = _config(tmp_path / "run.toml", student=student, train=train,
                     teacher_line=f"teacher_cache = {json.dumps(cache)}", eval_file=eval_file)
    workdir = str(tmp_path / "run")
    assert main(["distill", "--config", config, "--workdir", workdir]) == 0
    records = read_metrics(workdir)
    evals = [r for r in records if "eval_top1" in r]
    assert len(evals) == 3 and all("eval_cosine" in r for r in evals)
    assert records[-1]["step"] == 6 and np.isfinite(records[-1]["loss"])

    # The same run with the online teacher gives the same losses (cache = teacher).
    online = _config(tmp_path / "online.toml", student=student, train=train,
                     teacher_line=f"teacher = {json.dumps(teacher)}", eval_file=eval_file)
    assert main(["distill", "--config", online, "--workdir", str(tmp_path / "online")]) == 0
    a = [r["loss"] for r in records if "loss" in r]
    b = [r["loss"] for r in read_metrics(str(tmp_path / "online")) if "loss" in r]
    np.testing.assert_allclose(a, b, rtol=1e-4)

    # evaluate: a run step against the cache, and the same against the teacher model.
    capsys.readouterr()
    assert main(["evaluate", "-m", workdir, "--step", "6", "--teacher-cache", cache,
                 "--json"]) == 0
    by_cache = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "-m", workdir, "--teacher", teacher, "--texts", eval_file,
                 "--prompt-mix", MIX, "--max-seq-length", "32", "--json"]) == 0
    by_model = json.loads(capsys.readouterr().out)
    assert by_cache["texts"] == by_model["texts"] == 17
    assert abs(by_cache["eval_cosine"] - evals[-1]["eval_cosine"]) < 1e-3
    assert abs(by_cache["eval_cosine"] - by_model["eval_cosine"]) < 1e-4

    # A cache of another corpus or prompt mix is refused before any step.
    other = _config(tmp_path / "other.toml", student=student, train=TRAIN,
                    teacher_line=f"teacher_cache = {json.dumps(cache)}", eval_file=eval_file)
    assert main(["distill", "--config", other, "--workdir", str(tmp_path / "x")]) == 2
    assert "another corpus" in capsys.readouterr().err
    nomix = _config(tmp_path / "nomix.toml", student=student, train=train, mix=False,
                    teacher_line=f"teacher_cache = {json.dumps(cache)}", eval_file=eval_file)
    assert main(["distill", "--config", nomix, "--workdir", str(tmp_path / "y")]) == 2
    assert "prompt mix" in capsys.readouterr().err


def _tiny_bert_st(folder: str) -> str:
    """A sentence-transformers model of another architecture: BERT + mean Pooling."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from tarka_jax.testing.reference import train_tokenizer

    tok_dir = folder + "_tok"
    train_tokenizer(150, tok_dir)
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tok_dir, "tokenizer.json"),
                                     unk_token="<unk>", pad_token="<pad>", cls_token="<bos>",
                                     sep_token="<eos>", model_max_length=32)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=150, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=48,
                                max_position_embeddings=64), add_pooling_layer=False)
    bert_dir = folder + "_bert"
    bert.save_pretrained(bert_dir)
    hf_tok.save_pretrained(bert_dir)
    transformer = models.Transformer(bert_dir, max_seq_length=32)
    pooling = models.Pooling(32, "mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(folder)
    return folder


@pytest.mark.torch
def test_cache_from_a_sentence_transformers_teacher_of_another_architecture(
        tiny_models, eval_file, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    from tarka_jax.cli import main
    from tarka_jax.recipe.teacher_cache import TeacherCache
    from tarka_jax.train.metrics import read_metrics

    _, student = tiny_models
    bert = _tiny_bert_st(str(tmp_path / "bert"))
    train = _small_corpus(tmp_path)
    cache = str(tmp_path / "cache")
    assert main(["cache-teacher", "--teacher", bert, "--out", cache, "--train", train,
                 "--eval", eval_file]) == 0
    c = TeacherCache(cache)
    assert c.manifest["backend"] == "torch" and c.dim == 32
    with open(train, encoding="utf-8") as f:
        texts = [t.rstrip("\n") for t in f][:4]
    np.testing.assert_allclose(c.embeddings("train")[:4],
                               SentenceTransformer(bert, device="cpu").encode(texts), atol=1e-5)

    # The student embeds to 24 dims; student_output_dim = 32 replaces its last Dense.
    config = _config(tmp_path / "run.toml", student=student, train=train, mix=False, steps=6,
                     teacher_line=f"teacher_cache = {json.dumps(cache)}",
                     extra_model="student_output_dim = 32", loss="cosine = 1.0\nkl = 1.0",
                     eval_file=eval_file)
    workdir = str(tmp_path / "run")
    assert main(["distill", "--config", config, "--workdir", workdir]) == 0
    records = read_metrics(workdir)
    assert records[-1]["step"] == 6 and "eval_top1" in records[-1]
    with open(os.path.join(workdir, "run.json")) as f:
        run = json.load(f)
    assert run["model"]["dense"][-1]["out_features"] == 32
    assert run["sources"]["teacher_cache"]["backend"] == "torch"

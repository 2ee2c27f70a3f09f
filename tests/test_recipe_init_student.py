"""init-student: token texts per tokenizer style, and a transplant that starts near the teacher."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

EVAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                    "data", "tiny_eval.txt")


def test_token_text_per_tokenizer_style():
    from tarka_jax.recipe.init_student import token_text

    wp = {"prefix": "##"}
    assert token_text("##ter", "wordpiece", wp) == "ter"
    assert token_text("jupiter", "wordpiece", wp) == " jupiter"
    assert token_text("Ġmars", "bytelevel", {}) == " mars"
    assert token_text("Ã©", "bytelevel", {}) == "é"  # two bytes, one character
    assert token_text("Ã", "bytelevel", {}) is None  # a lone lead byte
    meta = {"replacement": "▁"}
    assert token_text("▁red", "metaspace", meta) == " red"
    assert token_text("<0x41>", "metaspace", meta) == "A"
    assert token_text("<0xC3>", "metaspace", meta) is None


def _byte_level_tokenizer(folder: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from tarka_jax.testing.reference import GEMMA_PROMPTS, SAMPLE_TEXTS, long_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|pad|>", "<|startoftext|>", "<|im_end|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([long_text(40, s) for s in range(50)] + list(SAMPLE_TEXTS)
                            + list(GEMMA_PROMPTS.values()), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|im_end|>",
        special_tokens=[("<|startoftext|>", 1), ("<|im_end|>", 2)])
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|startoftext|>",
                   "eos_token": "<|im_end|>", "pad_token": "<|pad|>", "model_max_length": 64}, f)


@pytest.fixture(scope="module")
def teacher_and_tokenizers(tmp_path_factory):
    from tarka_jax.testing.reference import train_tokenizer
    from tarka_jax.testing.tiny import tiny_config, write_model

    root = tmp_path_factory.mktemp("init_student")
    teacher = str(root / "teacher")
    write_model(teacher, tiny_config(307, 64, 3, (40, 24)), seed=1)
    wordpiece, bytelevel = str(root / "wp"), str(root / "bl")
    train_tokenizer(211, wordpiece)
    with open(os.path.join(wordpiece, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>",
                   "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "model_max_length": 64}, f)
    _byte_level_tokenizer(bytelevel)
    return teacher, wordpiece, bytelevel


def _cosine_to_teacher(teacher_emb, config, params, tokenizer, texts):
    from tarka_jax.inference.embedder import Embedder

    s = Embedder(config, params, tokenizer).encode(texts)
    return float(np.mean(np.sum(s * teacher_emb, axis=-1)))


def test_init_student_starts_closer_than_a_random_table(teacher_and_tokenizers, tmp_path,
                                                        capsys):
    from tarka_jax.cli import main
    from tarka_jax.convert import open_model
    from tarka_jax.inference.embedder import Embedder, load

    teacher, wordpiece, bytelevel = teacher_and_tokenizers
    with open(EVAL, encoding="utf-8") as f:
        texts = [t.strip() for t in f if t.strip()]
    t_emb = Embedder.from_pretrained(teacher).encode(texts)
    results = {}
    for name, tok in (("same", teacher), ("wordpiece", wordpiece), ("bytelevel", bytelevel)):
        out = str(tmp_path / name)
        assert main(["init-student", "--teacher", teacher, "--tokenizer", tok, "--out", out]) == 0
        printed = capsys.readouterr().out
        assert "random" in printed and f"wrote {out}" in printed
        with open(os.path.join(out, "init_student.json")) as f:
            report = json.load(f)
        config, params, tokenizer = load(out)  # a normal checkpoint folder
        assert open_model(out).meta.prompts == open_model(teacher).meta.prompts
        transplant = _cosine_to_teacher(t_emb, config, params, tokenizer, texts)
        table = params["encoder"]["embed_tokens"]["embedding"]
        rng = np.random.default_rng(0)
        random_table = (table.mean(0) + table.std(0) * rng.standard_normal(table.shape)
                        ).astype(np.float32)
        params["encoder"]["embed_tokens"]["embedding"] = random_table
        baseline = _cosine_to_teacher(t_emb, config, params, tokenizer, texts)
        results[name] = (transplant, baseline, report["random"])
    print(results)
    assert results["same"][0] > 0.9999 and results["same"][2] == 0  # exact for a shared vocab
    for name in ("wordpiece", "bytelevel"):
        transplant, baseline, _ = results[name]
        assert transplant > baseline + 0.05, results
    assert results["bytelevel"][2] > 0  # lone bytes / <|im_start|>: the random fallback


def test_init_student_reinit_and_output_dim(teacher_and_tokenizers, tmp_path):
    from tarka_jax.convert import open_model
    from tarka_jax.recipe.init_student import init_student

    teacher, wordpiece, _ = teacher_and_tokenizers
    out = str(tmp_path / "s")
    init_student(teacher, wordpiece, out, reinit=[1], output_dim=16, seed=3)
    s, t = open_model(out), open_model(teacher)
    assert s.config.embedding_dim == 16 and s.config.vocab_size == 211
    layer = lambda c, i: c.params["encoder"][f"layers_{i}"]["mlp"]["up_proj"]["kernel"]
    np.testing.assert_array_equal(layer(s, 0), layer(t, 0))
    assert not np.allclose(layer(s, 1), layer(t, 1))
    with pytest.raises(ValueError, match="out of range"):
        init_student(teacher, wordpiece, str(tmp_path / "bad"), reinit=[7])

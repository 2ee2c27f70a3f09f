"""TextTokenizer: token ids equal to transformers 5.x, batch layout, packing."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tarka_jax.testing.reference import GEMMA_PROMPTS, SAMPLE_TEXTS, long_text, train_tokenizer
from tarka_jax.text.rows import bucket_for, length_buckets, pack_rows
from tarka_jax.text.tokenizer import TextTokenizer, TokenizerError, check_texts

TEXTS = list(SAMPLE_TEXTS) + [
    long_text(150),  # truncated at 64 / 48 tokens
    "Héllo Wörld ß ﬁ ① 日本語 🙂 Ωmega",  # NFKC + lowercase + unknown chars
    "<bos> a literal special token <eos>",
    "   leading and trailing spaces   ",
    "\t\n",
]
PROMPTS = [None, GEMMA_PROMPTS["query"], ""]


def _tokenizer_folder(root, name, config_overrides=None, *, post_processor=True,
                      st_config=None, model_config=None) -> str:
    folder = os.path.join(str(root), name)
    train_tokenizer(211, folder)
    if not post_processor:
        path = os.path.join(folder, "tokenizer.json")
        with open(path) as f:
            data = json.load(f)
        data["post_processor"] = None
        with open(path, "w") as f:
            json.dump(data, f)
    config = {"tokenizer_class": "TokenizersBackend", "bos_token": "<bos>", "eos_token": "<eos>",
              "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": 48}
    config.update(config_overrides or {})
    config = {k: v for k, v in config.items() if v is not None}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    for file, data in (("sentence_bert_config.json", st_config), ("config.json", model_config)):
        if data is not None:
            with open(os.path.join(folder, file), "w") as f:
                json.dump(data, f)
    return folder


def _hf_ids(folder, texts, prompt):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(folder)
    full = [(prompt or "") + t for t in texts]
    return hf(full, truncation="longest_first", max_length=hf.model_max_length)["input_ids"]


# ---- parity with transformers --------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("flags", [None, (True, False), (False, True), (True, True), (False, False)])
def test_tokenizer_ids_match_transformers(tmp_path, flags):
    # add_bos_token/add_eos_token in tokenizer_config.json: transformers 5.24 drops them
    # when tokenizer.json exists, so the ids must not change with them.
    overrides = None if flags is None else {"add_bos_token": flags[0], "add_eos_token": flags[1]}
    folder = _tokenizer_folder(tmp_path, "tok", overrides)
    ours = TextTokenizer.from_folder(folder)
    assert ours.max_seq_length == 48
    for prompt in PROMPTS:
        assert ours.encode(TEXTS, prompt=prompt) == _hf_ids(folder, TEXTS, prompt), prompt
    truncated = ours.encode([long_text(150)])[0]
    assert len(truncated) == 48 and truncated[0] == 2 and truncated[-1] == 1


@pytest.mark.torch
def test_tokenizer_null_post_processor_and_missing_special_tokens(tmp_path):
    # No post-processor: transformers adds nothing. A named special token absent from
    # tokenizer.json ("<mask>") is added, so a literal "<mask>" becomes one token.
    folder = _tokenizer_folder(tmp_path, "bare", {"mask_token": "<mask>",
                                                  "additional_special_tokens": ["<extra>"]},
                               post_processor=False)
    ours = TextTokenizer.from_folder(folder)
    texts = TEXTS + ["a <mask> b <extra> c"]
    for prompt in PROMPTS[:2]:
        assert ours.encode(texts, prompt=prompt) == _hf_ids(folder, texts, prompt)
    assert ours.encode([""]) == [[]]


@pytest.mark.torch
def test_tokenizer_gemma_class_bpe_matches_transformers(tmp_path):
    # EmbeddingGemma's layout: byte-fallback BPE, "▁" normalizer, "<bos> $A" post-processor,
    # tokenizer_class GemmaTokenizer (which transformers rebuilds from vocab/merges) and
    # add_bos/add_eos flags in tokenizer_config.json (dropped by transformers).
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    folder = str(tmp_path / "gemma")
    os.makedirs(folder)
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator([long_text(40, s) for s in range(20)] + list(SAMPLE_TEXTS),
                            trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                                show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 2)])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GemmaTokenizer", "add_bos_token": True,
                   "add_eos_token": True, "bos_token": "<bos>", "eos_token": "<eos>",
                   "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
                   "model_max_length": 40}, f)
    ours = TextTokenizer.from_folder(folder)
    for prompt in PROMPTS[:2]:
        assert ours.encode(TEXTS, prompt=prompt) == _hf_ids(folder, TEXTS, prompt)


@pytest.mark.torch
def test_tokenizer_matches_sentence_transformers_preprocess(tiny_reference, tiny_st):
    ours = TextTokenizer.from_folder(tiny_reference)
    assert ours.max_seq_length == tiny_st.max_seq_length == 64
    for prompt in PROMPTS[:2]:
        features = tiny_st[0].preprocess(TEXTS, prompt=prompt)
        mask = features["attention_mask"].numpy().astype(bool)
        ref = [row[m].tolist() for row, m in zip(features["input_ids"].numpy(), mask)]
        assert ours.encode(TEXTS, prompt=prompt) == ref


# ---- settings resolved like sentence-transformers (no torch) --------------------------------


def test_tokenizer_max_seq_length_resolution(tmp_path):
    capped = _tokenizer_folder(tmp_path, "capped", {"model_max_length": 4096},
                               model_config={"max_position_embeddings": 40})
    assert TextTokenizer.from_folder(capped).max_seq_length == 40
    st = _tokenizer_folder(tmp_path, "st", {"model_max_length": 4096},
                           st_config={"max_seq_length": 100},
                           model_config={"max_position_embeddings": 40})
    # sentence-transformers keeps 100 here; tarka-jax caps it at the model's positions, as it
    # caps an explicit max_seq_length (docs/safety.md, "Hostile sizes")
    assert TextTokenizer.from_folder(st).max_seq_length == 40
    unlimited = _tokenizer_folder(tmp_path, "unlimited", {"model_max_length": int(1e30)})
    tok = TextTokenizer.from_folder(unlimited)
    assert tok.max_seq_length is None
    assert len(tok.encode([long_text(300)])[0]) > 300
    explicit = TextTokenizer.from_folder(capped, max_seq_length=12)
    assert len(explicit.encode([long_text(50)])[0]) == 12
    with pytest.raises(TokenizerError, match="no room"):
        TextTokenizer.from_folder(capped, max_seq_length=2)


def test_tokenizer_do_lower_case_adds_lowercase(tmp_path):
    folder = _tokenizer_folder(tmp_path, "lower", st_config={"do_lower_case": True})
    path = os.path.join(folder, "tokenizer.json")
    with open(path) as f:
        data = json.load(f)
    data["normalizer"] = {"type": "NFKC"}  # drop the built-in Lowercase
    with open(path, "w") as f:
        json.dump(data, f)
    lowered = TextTokenizer.from_folder(folder)
    plain = TextTokenizer.from_folder(folder, do_lower_case=False)
    assert lowered.encode(["MARS Planet"]) == plain.encode(["mars planet"])
    assert plain.encode(["MARS Planet"]) != plain.encode(["mars planet"])


def test_tokenizer_loaded_from_its_file_knows_its_widest_token(tmp_path):
    """Without do_lower_case the backend is read straight from tokenizer.json (no parsed JSON):
    loading once failed ("'NoneType' object has no attribute 'get'", every such model,
    builtin:demo-mini included)."""
    folder = _tokenizer_folder(tmp_path, "plain", st_config={})
    with open(os.path.join(folder, "tokenizer.json")) as f:
        vocab = json.load(f)["model"]["vocab"]
    plain = TextTokenizer.from_folder(folder)
    lowered = TextTokenizer.from_folder(folder, do_lower_case=True)
    assert plain.widest_token_chars == lowered.widest_token_chars == max(map(len, vocab))


def test_tokenizer_missing_files_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        TextTokenizer.from_folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        TextTokenizer.from_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        TextTokenizer.from_folder(tmp_path)


# ---- batch layout ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return TextTokenizer.from_folder(_tokenizer_folder(tmp_path_factory.mktemp("t"), "tok"))


def test_tokenizer_batch_layout(tok):
    texts = ["mars", "the red planet is mars", ""]
    ids = tok.encode(texts)
    batch = tok(texts, buckets=(8, 16, 48), pad_batch_to=4)
    assert set(batch) == {"input_ids", "segment_ids", "positions"}
    assert all(v.dtype == np.int32 and v.shape == (4, 8) for v in batch.values())
    for row, seq in enumerate(ids):
        n = len(seq)
        assert batch["input_ids"][row, :n].tolist() == seq
        assert (batch["input_ids"][row, n:] == tok.pad_token_id).all()
        assert batch["segment_ids"][row].tolist() == [1] * n + [0] * (8 - n)
        assert batch["positions"][row, :n].tolist() == list(range(n))
    assert (batch["segment_ids"][3] == 0).all()
    assert tok(texts, pad_to_multiple_of=5)["input_ids"].shape == (3, 10)
    assert tok(texts)["input_ids"].shape == (3, max(map(len, ids)))
    prompted = tok(["mars"], prompt="query: ")["input_ids"][0].tolist()
    assert prompted == tok.encode(["query: mars"])[0]


def test_tokenizer_pack_layout(tok):
    texts = [" ".join(["mars"] * n) for n in (1, 9, 3, 20, 2, 5, 0, 14, 7)]
    ids = tok.encode(texts)
    assert [len(x) for x in ids] == [3, 11, 5, 22, 4, 7, 2, 16, 9]
    batch = tok(texts, pack=True, row_length=24, max_segments=3)
    slots = batch["slots"]
    assert batch["input_ids"].shape[1] == 24
    assert sorted(map(tuple, slots.tolist())) == sorted(set(map(tuple, slots.tolist())))
    for i, (row, slot) in enumerate(slots):
        member = batch["segment_ids"][row] == slot + 1
        assert batch["input_ids"][row][member].tolist() == ids[i]
        assert batch["positions"][row][member].tolist() == list(range(len(ids[i])))
    assert batch["segment_ids"].max() <= 3
    # Fewer rows than texts; every row's segments are contiguous runs 1..k.
    assert batch["input_ids"].shape[0] < len(texts)
    for seg in batch["segment_ids"]:
        real = seg[seg > 0]
        assert (np.diff(real) >= 0).all() and real[0] == 1


def test_pack_rows_best_fit():
    rows = pack_rows([5, 3, 8, 2, 2], row_length=8)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 8, 2, 2][i] for i in r) <= 8 for r in rows)
    assert len(rows) == 3  # [8], [5, 3], [2, 2]
    assert len(pack_rows([1] * 10, row_length=8, max_segments=4)) == 3
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([9], row_length=8)


def test_length_buckets():
    assert length_buckets(2048) == (16, 32, 64, 128, 256, 512, 1024, 2048)
    assert length_buckets(48) == (16, 32, 48)
    assert length_buckets(10) == (10,)
    assert bucket_for(17, (16, 32, 48)) == 32 and bucket_for(48, (16, 32, 48)) == 48


def test_check_texts_errors():
    assert check_texts("a") == (["a"], True)
    assert check_texts(("a", "")) == (["a", ""], False)
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        check_texts(["a", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is a NoneType"):
        check_texts([None])
    with pytest.raises(TypeError, match="got bytes"):
        check_texts(b"raw")
    with pytest.raises(TypeError, match="got int"):
        check_texts(5)


@pytest.mark.parametrize("overrides", [{"pad_token": {"content": 5}},
                                       {"added_tokens_decoder": {"x": {"content": "<z>"}}},
                                       {"added_tokens_decoder": {"7": "not an object"}}])
def test_a_malformed_special_token_entry_names_the_file(tmp_path, overrides):
    """Used to escape as "'int' object is not an instance of 'str'", naming nothing."""
    folder = _tokenizer_folder(tmp_path, "bad", overrides)
    with pytest.raises(TokenizerError, match="tokenizer_config.json in .*: a special token "
                                             "entry is malformed"):
        TextTokenizer.from_folder(folder)

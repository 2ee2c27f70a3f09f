"""Chunked embeddings against sentence-transformers fed the same token ids (torch).

Each window of :func:`tarka_jax.text.chunking.split_windows` (its layout is checked on
its own in tests/test_chunking.py) goes to sentence-transformers as ``input_ids`` /
``attention_mask`` tensors, never as decoded and re-tokenised text; our windows run in
one packed ``encode`` call with short texts. Texts are 1x, 1.5x, 3x and 10x
max_seq_length (a small one, 20 tokens, so the test stays fast), with and without a prompt.

"mean" is checked as documented (docs/long_documents.md): the torch model's last hidden
states of every window of a text, mean-pooled all together, through sentence-transformers'
own Dense and Normalize modules. Tolerance 1e-5 on unit vectors, as the other parity tests
(tests/test_model_parity.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from tarka_jax import Embedder
from tarka_jax.testing.reference import GEMMA_PROMPTS, long_text
from tarka_jax.text.chunking import split_windows

pytestmark = pytest.mark.torch

WINDOW = 20
TOL = 1e-5
SHORT = ["", "x", "Which planet is known as the Red Planet?", "the red planet"]


@pytest.fixture(scope="module")
def ours(tiny_reference):
    return Embedder.from_pretrained(tiny_reference, max_seq_length=WINDOW)


@pytest.fixture(scope="module")
def texts(ours):
    return long_and_short(ours)


def long_and_short(ours) -> list[str]:
    """Short texts, then texts of about 1x, 1.5x, 3x and 10x the window in tokens."""
    whole = Tokenizer.from_str(ours.tokenizer.backend.to_str())
    whole.no_truncation()

    def of_tokens(n, seed):
        words = n
        while len(whole.encode(long_text(words, seed), add_special_tokens=False).ids) > n:
            words -= 1
        return long_text(words, seed)
    return SHORT + [of_tokens(int(WINDOW * f), s) for s, f in enumerate((1, 1.5, 3, 10))]


def _st_features(ids_list):
    import torch

    width = max(map(len, ids_list))
    ids = torch.zeros((len(ids_list), width), dtype=torch.long)
    mask = torch.zeros((len(ids_list), width), dtype=torch.long)
    for r, ids_r in enumerate(ids_list):
        ids[r, :len(ids_r)] = torch.tensor(ids_r)
        mask[r, :len(ids_r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _st_embed_ids(st, ids_list) -> np.ndarray:
    import torch

    with torch.no_grad():
        return st(_st_features(ids_list))["sentence_embedding"].numpy()


def _st_mean_of_windows(st, ids_list) -> np.ndarray:
    """One text's windows, as documented: all their tokens' last hidden states mean-pooled
    together, then sentence-transformers' modules after Pooling (Dense..., Normalize)."""
    import torch

    features = _st_features(ids_list)
    with torch.no_grad():
        hidden = st[0](dict(features))["token_embeddings"]  # [windows, T, E]
        mask = features["attention_mask"][..., None].to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=(0, 1)) / mask.sum()  # [E]
        out = {"sentence_embedding": pooled[None]}
        for module in list(st)[2:]:
            out = module(out)
    return out["sentence_embedding"][0].numpy()


@pytest.mark.parametrize("prompt", ["", GEMMA_PROMPTS["query"]], ids=["no_prompt", "prompt"])
def test_every_window_matches_sentence_transformers_on_the_same_ids(ours, tiny_st, texts,
                                                                     prompt):
    chunks = ours.encode(texts, prompt=prompt, chunking="chunks", chunk_overlap=3)
    win = split_windows(ours.tokenizer, texts, prompt=prompt, window=WINDOW, overlap=3)
    np.testing.assert_array_equal(chunks.text_index, win.text_index)
    np.testing.assert_array_equal(chunks.token_spans, win.token_spans)
    counts = np.bincount(win.text_index)
    assert counts[:2].tolist() == [1, 1] and counts[4:].tolist() == sorted(counts[4:])
    assert counts[-1] >= 10 and max(map(len, win.ids)) == WINDOW and not win.cut.any()
    ref = _st_embed_ids(tiny_st, win.ids)
    assert chunks.embeddings.shape == ref.shape
    assert np.abs(chunks.embeddings - ref).max() <= TOL


@pytest.mark.parametrize("prompt", ["", GEMMA_PROMPTS["document"]], ids=["no_prompt", "prompt"])
def test_mean_is_the_head_over_all_window_tokens(ours, tiny_st, texts, prompt):
    mean = ours.encode(texts, prompt=prompt, chunking="mean")
    win = split_windows(ours.tokenizer, texts, prompt=prompt, window=WINDOW)
    ref = np.stack([_st_mean_of_windows(tiny_st, [win.ids[r] for r in
                                                  np.flatnonzero(win.text_index == i)])
                    for i in range(len(texts))])
    assert np.abs(mean - ref).max() <= TOL
    # texts that fit one window: sentence-transformers' own encode of the text
    fits = np.flatnonzero(np.bincount(win.text_index) == 1)
    assert len(fits) >= 3
    np.testing.assert_allclose(mean[fits], tiny_st.encode([texts[i] for i in fits],
                                                          prompt=prompt), rtol=0, atol=TOL)


def test_mteb_encoder_passes_chunking_through(ours, texts):
    mteb = pytest.importorskip("mteb")
    from datasets import Dataset
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

    from tarka_jax.errors import UsageError
    from tarka_jax.mteb.encoder import TarkaEncoder

    encoder = TarkaEncoder(ours, chunking="mean", chunk_overlap=2)
    task = mteb.get_task("NFCorpus")
    loader = DataLoader(Dataset.from_dict({"text": texts}), batch_size=3)
    got = encoder.encode(loader, task_metadata=task.metadata, hf_split="test",
                         hf_subset="default", prompt_type=PromptType.document)
    prompt = encoder.prompt_for(task.metadata, PromptType.document)
    want = ours.encode_document(texts, prompt=prompt, chunking="mean", chunk_overlap=2)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert encoder.mteb_model_meta.loader_kwargs["chunking"] == "mean"
    assert "chunking" not in TarkaEncoder(ours).mteb_model_meta.loader_kwargs
    with pytest.raises(UsageError, match="mteb scores one vector per text"):
        TarkaEncoder(ours, chunking="chunks")

"""TarkaEncoder through the real ``mteb.evaluate`` vs ``SentenceTransformer`` on the same folder.

Local tasks (defined here, in-memory, like mteb's own mock tasks) of five task
types run through ``mteb.evaluate(..., cache=None)`` twice: once with our encoder,
once with mteb's ``SentenceTransformerEncoderWrapper``. Spies record, for every
``encode`` call mteb makes, the embeddings it receives and the prompt each
library actually prepended (ours at the tokenizer, sentence-transformers' at
``SentenceTransformer.preprocess``). Checked: embeddings <= 1e-6, identical
prompts (and the EmbeddingGemma prompt each task type should get), main scores
within 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch
mteb = pytest.importorskip("mteb")

from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.types import PromptType

from tarka_jax.testing.reference import GEMMA_PROMPTS, long_text

EMBED_TOL = 1e-6
SCORE_TOL = 1e-4
_ARGS = {
    "description": "tarka-jax test task", "reference": "https://github.com/embeddings-benchmark/mteb",
    "dataset": {"path": "NA", "revision": "NA"}, "category": "t2t", "eval_splits": ["test"],
    "eval_langs": ["eng-Latn"], "date": ("2026-01-01", "2026-01-01"), "dialect": ["Written"],
    "domains": [], "task_subtypes": [], "license": "cc-by-4.0", "annotations_creators": "derived",
    "modalities": ["text"], "sample_creation": "found", "bibtex_citation": "",
}


def _text(n_words: int, seed: int) -> str:
    return long_text(n_words, seed)


class LocalRetrieval(AbsTaskRetrieval):
    metadata = TaskMetadata(type="Retrieval", name="TarkaLocalRetrieval",
                            main_score="ndcg_at_10", **_ARGS)

    def load_data(self, num_proc=None, **kwargs):
        queries = Dataset.from_list([{"id": f"q{i}", "text": _text(4 + i % 3, i)}
                                     for i in range(6)])
        corpus = Dataset.from_list([{"id": f"d{i}", "text": _text(9 + i % 5, 50 + i),
                                     "title": ""} for i in range(12)])
        qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 6}": 1} for i in range(6)}
        split = RetrievalSplitData(queries=queries, corpus=corpus, relevant_docs=qrels,
                                   top_ranked=None)
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


class LocalSTS(AbsTaskSTS):
    metadata = TaskMetadata(type="STS", name="TarkaLocalSTS", main_score="cosine_spearman",
                            **_ARGS)
    min_score, max_score = 0, 5

    def load_data(self, num_proc=None, **kwargs):
        s1 = [_text(6, 100 + i) for i in range(12)]
        s2 = [_text(7, 100 + i if i % 2 else 200 + i) for i in range(12)]
        scores = [float((i * 7) % 6) for i in range(12)]
        self.dataset = DatasetDict({"test": Dataset.from_dict(
            {"sentence1": s1, "sentence2": s2, "score": scores})})
        self.data_loaded = True


class LocalClassification(AbsTaskClassification):
    metadata = TaskMetadata(type="Classification", name="TarkaLocalClassification",
                            main_score="accuracy", **_ARGS)
    n_experiments = 2

    def load_data(self, num_proc=None, **kwargs):
        def split(offset, n):
            return Dataset.from_dict({"text": [_text(5 + i % 4, offset + i) for i in range(n)],
                                      "label": [i % 2 for i in range(n)]})

        self.dataset = DatasetDict({"train": split(300, 16), "test": split(400, 10)})
        self.data_loaded = True


class LocalClustering(AbsTaskClustering):
    metadata = TaskMetadata(type="Clustering", name="TarkaLocalClustering",
                            main_score="v_measure", **_ARGS)
    max_document_to_embed = 18
    max_fraction_of_documents_to_embed = None
    n_clusters = 2
    max_documents_per_cluster = 12

    def load_data(self, num_proc=None, **kwargs):
        texts = [_text(6 + i % 3, 500 + i) for i in range(18)]
        self.dataset = DatasetDict({"test": Dataset.from_dict(
            {"sentences": texts, "labels": [i % 3 for i in range(18)]})})
        self.data_loaded = True


class LocalPairClassification(AbsTaskPairClassification):
    metadata = TaskMetadata(type="PairClassification", name="TarkaLocalPairClassification",
                            main_score="similarity_ap", **_ARGS)

    def load_data(self, num_proc=None, **kwargs):
        s1 = [_text(6, 600 + i) for i in range(10)]
        s2 = [_text(6, 600 + i if i % 2 else 700 + i) for i in range(10)]
        self.dataset = DatasetDict({"test": Dataset.from_dict(
            {"sentence1": s1, "sentence2": s2, "labels": [i % 2 for i in range(10)]})})
        self.data_loaded = True


TASKS = (LocalRetrieval, LocalSTS, LocalClassification, LocalClustering,
         LocalPairClassification)

# (task type, prompt type) -> the EmbeddingGemma prompt key mteb should pick.
EXPECTED_PROMPT = {
    ("Retrieval", PromptType.query): "Retrieval-query",
    ("Retrieval", PromptType.document): "Retrieval-document",
    ("STS", None): "STS",
    ("Classification", None): "Classification",
    ("Clustering", None): "Clustering",
    ("PairClassification", None): "PairClassification",
}


# ---- spies ---------------------------------------------------------------------------------


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, np.float32)


class EncodeSpy:
    """Wraps an mteb encoder's ``encode``: per call (task, prompt type, prompts used, output)."""

    def __init__(self, encoder, record_prompt):
        self.calls, self._prompts = [], []
        record_prompt(self._prompts)
        original = encoder.encode

        def encode(inputs, *, task_metadata, prompt_type=None, **kwargs):
            self._prompts.clear()
            out = original(inputs, task_metadata=task_metadata, prompt_type=prompt_type, **kwargs)
            self.calls.append((task_metadata.name, task_metadata.type, prompt_type,
                               set(self._prompts), _as_numpy(out)))
            return out

        encoder.encode = encode


def _spy_tokenizer(tokenizer):
    def install(sink):
        original = tokenizer.encode

        def encode(texts, *, prompt=None):
            sink.append(prompt or "")
            return original(texts, prompt=prompt)

        tokenizer.encode = encode
    return install


def _spy_preprocess(st):
    def install(sink):
        original = st.preprocess

        def preprocess(inputs, prompt=None, **kwargs):
            sink.append(prompt or "")
            return original(inputs, prompt=prompt, **kwargs)

        st.preprocess = preprocess
    return install


def _run_both(folder):
    """(our spy, ST spy, our results, ST results) for every local task on ``folder``."""
    from mteb.models import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

    from tarka_jax.mteb.encoder import TarkaEncoder

    ours = TarkaEncoder(folder)
    st = SentenceTransformer(folder, device="cpu")
    theirs = SentenceTransformerEncoderWrapper(st)
    spies = (EncodeSpy(ours, _spy_tokenizer(ours.model.tokenizer)),
             EncodeSpy(theirs, _spy_preprocess(st)))
    results = [mteb.evaluate(model, [t() for t in TASKS], cache=None, show_progress_bar=False,
                             encode_kwargs={"batch_size": 8})
               for model in (ours, theirs)]
    for r in results:
        assert not r.exceptions, r.exceptions
    return spies, results


def _scores(result) -> dict[str, float]:
    return {t.task_name: t.get_score() for t in result.task_results}


def _check_parity(folder, expected_prompts):
    (ours, theirs), (r_ours, r_theirs) = _run_both(folder)
    assert len(ours.calls) == len(theirs.calls) >= len(TASKS)
    seen_types = set()
    for a, b in zip(ours.calls, theirs.calls):
        name, task_type, prompt_type, prompts_a, emb_a = a
        assert (name, prompt_type) == (b[0], b[2])
        assert prompts_a == b[3] and len(prompts_a) == 1, (name, prompt_type, prompts_a, b[3])
        assert prompts_a == {expected_prompts(task_type, prompt_type)}, (name, prompts_a)
        assert emb_a.shape == b[4].shape
        np.testing.assert_allclose(emb_a, b[4], rtol=0, atol=EMBED_TOL, err_msg=name)
        seen_types.add((task_type, prompt_type))
    assert seen_types == set(EXPECTED_PROMPT)
    s_ours, s_theirs = _scores(r_ours), _scores(r_theirs)
    assert set(s_ours) == {t.metadata.name for t in TASKS}
    for name, value in s_ours.items():
        assert abs(value - s_theirs[name]) <= SCORE_TOL, (name, value, s_theirs[name])
    return s_ours, ours


def _retrieval_margin(spy) -> float:
    """Smallest gap between two documents' scores for one query (rank flips need < 1e-6)."""
    q = next(c[4] for c in spy.calls if c[2] == PromptType.query)
    d = next(c[4] for c in spy.calls if c[2] == PromptType.document)
    s = np.sort((q / np.linalg.norm(q, axis=1, keepdims=True))
                @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T, axis=1)
    return float(np.min(np.diff(s, axis=1)))


def test_mteb_random_gemma_checkpoint_matches_sentence_transformers(tiny_reference):
    scores, spy = _check_parity(
        tiny_reference, lambda task_type, prompt_type:
        GEMMA_PROMPTS[EXPECTED_PROMPT[(task_type, prompt_type)]])
    # The task data leaves room: no two candidate documents within 1e-5 of each other.
    assert _retrieval_margin(spy) > 1e-5
    assert 0.0 <= scores["TarkaLocalRetrieval"] <= 1.0


def test_mteb_demo_mini_matches_sentence_transformers():
    from tarka_jax.convert.sources import resolve_folder

    # demo-mini has no prompts: every call must use none, on both sides.
    _check_parity(resolve_folder("builtin:demo-mini"), lambda *_: "")


def test_mteb_prompt_fallbacks_match_sentence_transformers(tmp_path):
    """Odd prompt sets: ST's built-in query/document keys, "passage", a default prompt."""
    from mteb.models import SentenceTransformerEncoderWrapper
    from torch.utils.data import DataLoader

    from tarka_jax.mteb.encoder import TarkaEncoder
    from tarka_jax.testing.reference import TinySpec, build_reference_model

    folder = str(tmp_path / "model")
    st = build_reference_model(folder, TinySpec(num_layers=1, layer_types=("full_attention",),
                                                default_prompt_name="passage", prompts={
        "passage": "p: ", "TarkaLocalSTS": "sts task: ", "Clustering": "c: ",
        "Classification-query": "cq: ", "NotATask": "x: "}))
    with pytest.warns(UserWarning, match="NotATask"):
        ours = TarkaEncoder(folder)
    with pytest.warns(UserWarning, match="NotATask"):
        theirs = SentenceTransformerEncoderWrapper(st)
    used_a, used_b = [], []
    _spy_tokenizer(ours.model.tokenizer)(used_a)
    _spy_preprocess(st)(used_b)
    loader = DataLoader(Dataset.from_dict({"text": ["the red planet", "a gas giant"]}),
                        batch_size=2)
    for task in TASKS:
        for prompt_type in (None, PromptType.query, PromptType.document):
            used_a.clear(), used_b.clear()
            kw = {"task_metadata": task.metadata, "hf_split": "test", "hf_subset": "default",
                  "prompt_type": prompt_type}
            a = _as_numpy(ours.encode(loader, **kw))
            b = _as_numpy(theirs.encode(loader, **kw))
            assert set(used_a) == set(used_b), (task.metadata.name, prompt_type, used_a, used_b)
            assert ours.prompt_for(task.metadata, prompt_type) == (used_b[0] or "")
            np.testing.assert_allclose(a, b, rtol=0, atol=EMBED_TOL)


def test_mteb_model_meta(tiny_reference):
    import jax

    from tarka_jax.mteb.encoder import TarkaEncoder

    enc = TarkaEncoder(tiny_reference)
    meta = enc.mteb_model_meta
    n = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(enc.model.params))
    assert meta.framework == ["JAX"] and meta.n_parameters == n
    assert meta.embed_dim == enc.model.embedding_dim and meta.max_tokens == enc.model.max_seq_length
    assert meta.similarity_fn_name.value == "cosine" and meta.use_instructions
    assert meta.name.startswith("local/") and meta.revision.startswith("sha256-")
    assert TarkaEncoder(tiny_reference, name="me/tiny").mteb_model_meta.name == "me/tiny"
    assert isinstance(enc, mteb.models.models_protocols.EncoderProtocol)
    with pytest.raises(NotImplementedError, match="one device"):
        TarkaEncoder(tiny_reference, devices=["cpu", "cpu"])

"""Local MTEB tasks built from the shipped stdlib-docstring corpus (``examples/data/stdlib``).

    tarka-jax mteb --model builtin:demo-mini --task-module examples/mteb_docstring_tasks.py \
        --output-folder runs/mteb-demo

Everything is in memory and offline. Each docstring pair has a summary line, a
body and a ``source`` (``module.Class.method``); its *module* is the first dotted
component. Tasks (held-out pairs unless said otherwise):

* ``DocstringRetrieval``: each summary is a query; its own body is the one
  relevant document among all held-out bodies (main score nDCG@10).
* ``DocstringSTS``: (summary, body) pairs with gold similarity 5 for the same
  docstring, 2 for another docstring of the same module, 0 for one of another
  module -- one pair of each kind per summary where it exists (Spearman of cosines).
* ``DocstringClassification``: summary -> module, for modules with at least 16
  training and 4 held-out summaries; trained on the train split (accuracy).
* ``DocstringClustering``: held-out summaries and bodies of those modules,
  clustered by module (V-measure).
* ``DocstringPairClassification``: the 5 and 0 pairs of the STS task as
  positives / negatives (average precision).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

SEED = 0
MIN_TRAIN, MIN_HELDOUT = 16, 4  # per module, for classification and clustering

_ARGS = {
    "description": "Python standard-library docstrings shipped with tarka-jax",
    "reference": "https://docs.python.org/3/library/",
    "dataset": {"path": "local/tarka-jax-stdlib-docstrings", "revision": "local"},
    "category": "t2t", "eval_splits": ["test"], "eval_langs": ["eng-Latn"],
    "date": ("2024-01-01", "2024-12-31"), "dialect": ["Written"], "domains": ["Programming"],
    "task_subtypes": [], "license": "not specified", "annotations_creators": "derived",
    "modalities": ["text"], "sample_creation": "found", "bibtex_citation": "",
}


def module_of(pair: dict) -> str:
    return pair["source"].split(".")[0]


def _corpus():
    from tarka_jax.testing.demo import load_corpus

    return load_corpus()


def _labelled_modules(corpus) -> list[str]:
    train = Counter(module_of(p) for p in corpus.split("train"))
    held = Counter(module_of(p) for p in corpus.split("heldout"))
    return sorted(m for m in held if train[m] >= MIN_TRAIN and held[m] >= MIN_HELDOUT)


def sts_pairs(heldout: list[dict], seed: int = SEED) -> tuple[list[str], list[str], list[float]]:
    """(summaries, bodies, gold) by the rule: same docstring 5, same module 2, other 0."""
    rng = np.random.default_rng(seed)
    by_module = defaultdict(list)
    for i, p in enumerate(heldout):
        by_module[module_of(p)].append(i)
    s1, s2, gold = [], [], []
    for i, p in enumerate(heldout):
        same = [j for j in by_module[module_of(p)] if j != i]
        other = [j for j in range(len(heldout)) if module_of(heldout[j]) != module_of(p)]
        picks = [(i, 5.0)]
        if same:
            picks.append((int(rng.choice(same)), 2.0))
        if other:
            picks.append((int(rng.choice(other)), 0.0))
        for j, score in picks:
            s1.append(p["summary"])
            s2.append(heldout[j]["body"])
            gold.append(score)
    return s1, s2, gold


class DocstringRetrieval(AbsTaskRetrieval):
    metadata = TaskMetadata(type="Retrieval", name="DocstringRetrieval", main_score="ndcg_at_10",
                            **_ARGS)

    def load_data(self, num_proc=None, **kwargs):
        held = _corpus().split("heldout")
        queries = Dataset.from_list([{"id": f"q{p['id']}", "text": p["summary"]} for p in held])
        docs = Dataset.from_list([{"id": f"d{p['id']}", "text": p["body"], "title": ""}
                                  for p in held])
        qrels = {f"q{p['id']}": {f"d{p['id']}": 1} for p in held}
        self.dataset = {"default": {"test": RetrievalSplitData(
            queries=queries, corpus=docs, relevant_docs=qrels, top_ranked=None)}}
        self.data_loaded = True


class DocstringSTS(AbsTaskSTS):
    metadata = TaskMetadata(type="STS", name="DocstringSTS", main_score="cosine_spearman",
                            **_ARGS)
    min_score, max_score = 0, 5

    def load_data(self, num_proc=None, **kwargs):
        s1, s2, gold = sts_pairs(_corpus().split("heldout"))
        self.dataset = DatasetDict({"test": Dataset.from_dict(
            {"sentence1": s1, "sentence2": s2, "score": gold})})
        self.data_loaded = True


class DocstringClassification(AbsTaskClassification):
    metadata = TaskMetadata(type="Classification", name="DocstringClassification",
                            main_score="accuracy", **_ARGS)

    def load_data(self, num_proc=None, **kwargs):
        corpus = _corpus()
        modules = _labelled_modules(corpus)
        label = {m: i for i, m in enumerate(modules)}

        def split(name):
            pairs = [p for p in corpus.split(name) if module_of(p) in label]
            return Dataset.from_dict({"text": [p["summary"] for p in pairs],
                                      "label": [label[module_of(p)] for p in pairs]})

        self.dataset = DatasetDict({"train": split("train"), "test": split("heldout")})
        self.data_loaded = True


class DocstringClustering(AbsTaskClustering):
    metadata = TaskMetadata(type="Clustering", name="DocstringClustering", main_score="v_measure",
                            **_ARGS)
    max_fraction_of_documents_to_embed = None

    def load_data(self, num_proc=None, **kwargs):
        corpus = _corpus()
        modules = _labelled_modules(corpus)
        pairs = [p for p in corpus.split("heldout") if module_of(p) in modules]
        texts = [p["summary"] for p in pairs] + [p["body"] for p in pairs]
        labels = [modules.index(module_of(p)) for p in pairs] * 2
        self.max_document_to_embed = len(texts)
        self.dataset = DatasetDict({"test": Dataset.from_dict(
            {"sentences": texts, "labels": labels})})
        self.data_loaded = True


class DocstringPairClassification(AbsTaskPairClassification):
    metadata = TaskMetadata(type="PairClassification", name="DocstringPairClassification",
                            main_score="similarity_ap", **_ARGS)

    def load_data(self, num_proc=None, **kwargs):
        s1, s2, gold = sts_pairs(_corpus().split("heldout"))
        keep = [i for i, g in enumerate(gold) if g != 2.0]
        self.dataset = DatasetDict({"test": Dataset.from_dict({
            "sentence1": [s1[i] for i in keep], "sentence2": [s2[i] for i in keep],
            "labels": [int(gold[i] == 5.0) for i in keep]})})
        self.data_loaded = True

"""Prompts: sentence-transformers' query / document rule, and a per-example task prompt in training.

Which prompt ``encode_query`` / ``encode_document`` prepend when none is given is one rule
(:func:`st_prompt_name`), shared by the Embedder, the corpus job, the MTEB encoder and the
held-out evaluation of the training loops.

Instruction-aware data: a per-example task prompt, the same for teacher and student.

EmbeddingGemma (and Tarka, "instruction aware") embed ``prompt + text`` with the
task prompts of EmbeddingGemma's model card (docs/numerics.md, "Prompts").
Distilling on raw text alone would teach the student the no-prompt geometry
only, so each training text gets a prompt name drawn from a configured mix
(``[data.prompt_mix]``, weights per name; ``none`` = no prompt), and the *same* prompt string is prepended for both models.

The draw is a pure function of ``(seed, stream, number of texts, mix)``: text ``i``
of the corpus always gets the same prompt, across epochs, resumes and hosts, and
a teacher cache computed with the same mix holds exactly the embeddings the loop
asks for (the cache records the draw and the loop checks it).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tarka_jax.errors import TarkaError

#: EmbeddingGemma's ``config_sentence_transformers.json`` prompts.
TASK_PROMPTS: dict[str, str] = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "BitextMining": "task: search result | query: ",
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
    "InstructionRetrieval": "task: code retrieval | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ",
    "Reranking": "task: search result | query: ",
    "Retrieval": "task: search result | query: ",
    "Retrieval-query": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
}
NONE = "none"
TRAIN_STREAM, EVAL_STREAM = 0, 1
#: ``encode_document`` takes the first of these prompt names the model has (sentence-transformers).
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


def st_prompt_name(prompts: Mapping[str, object], kind: str | None) -> str | None:
    """The prompt name sentence-transformers picks when the caller names none.

    ``kind`` "query" (``encode_query``): "query" when the model has that key;
    "document" (``encode_document``): the first of :data:`DOCUMENT_PROMPT_NAMES` it has;
    otherwise, and for ``kind`` None (plain ``encode``), None: the model's
    ``default_prompt_name`` then applies. A key whose value is None still counts (it means
    "no prompt" and blocks the default), as in sentence-transformers 6.
    """
    if kind == "query":
        return "query" if "query" in prompts else None
    if kind == "document":
        return next((n for n in DOCUMENT_PROMPT_NAMES if n in prompts), None)
    return None


class PromptMixError(TarkaError):
    """A prompt mix that names unknown prompts or has no positive weight."""


def check_mix(mix: Mapping[str, float], prompts: Mapping[str, str]) -> None:
    """Raise unless every name is ``none`` or one of ``prompts`` and some weight is > 0."""
    unknown = sorted(k for k in mix if k != NONE and k not in prompts)
    if unknown:
        raise PromptMixError(f"data.prompt_mix names unknown prompts {unknown}; known: "
                             f"{[NONE, *sorted(prompts)]}")
    weights = list(mix.values())
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights):
        raise PromptMixError(f"data.prompt_mix weights must be numbers >= 0, got {dict(mix)}")
    if mix and sum(weights) <= 0:
        raise PromptMixError("data.prompt_mix has no positive weight")


def prompt_table(teacher_prompts: Mapping[str, str] | None) -> dict[str, str]:
    """The prompt strings in force: the teacher's own, else EmbeddingGemma's (TASK_PROMPTS)."""
    return dict(teacher_prompts) if teacher_prompts else dict(TASK_PROMPTS)


def assign_prompts(n: int, mix: Mapping[str, float], seed: int,
                   stream: int = TRAIN_STREAM) -> tuple[list[str], np.ndarray]:
    """``(names, choice)``: sorted prompt names and int32 ``[n]`` indices into them.

    Empty ``mix`` = every text unprompted (``names == ["none"]``, all zeros).
    """
    if not mix:
        return [NONE], np.zeros((n,), np.int32)
    names = sorted(mix)
    p = np.asarray([float(mix[k]) for k in names], np.float64)
    rng = np.random.default_rng([int(seed), 0x7A4B, int(stream)])
    return names, rng.choice(len(names), size=n, p=p / p.sum()).astype(np.int32)


def prompt_strings(names: list[str], choice: np.ndarray, prompts: Mapping[str, str]) -> list[str]:
    """The prompt string of each text ("" for ``none``)."""
    table = [("" if k == NONE else prompts[k]) for k in names]
    return [table[i] for i in choice]

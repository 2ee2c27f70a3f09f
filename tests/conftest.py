"""Shared fixtures: random-weight reference checkpoints built by the real PyTorch stack.

Building a checkpoint needs torch + transformers + sentence-transformers; the
torch-free CI leg never requests these fixtures (its tests are marked
``not torch``).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def reference_factory(tmp_path_factory):
    """build(name, **TinySpec fields) -> folder; each distinct spec is built once per session."""
    from tarka_jax.testing import TinySpec, build_reference_model

    built: dict[tuple, str] = {}

    def build(name: str = "tiny", **fields) -> str:
        key = (name, tuple(sorted(fields.items())))
        if key not in built:
            folder = str(tmp_path_factory.mktemp(f"ref_{name}"))
            build_reference_model(folder, TinySpec(**fields))
            built[key] = folder
        return built[key]

    return build


@pytest.fixture(scope="session")
def tiny_reference(reference_factory) -> str:
    """The default tiny checkpoint: GQA 4:2, query_pre_attn_scalar != head_dim, window 8 (radius 4)."""
    return reference_factory("tiny")


@pytest.fixture(scope="session")
def tiny_st(tiny_reference):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(tiny_reference, device="cpu")

# ---- (helpers: add your shared fixtures below this line, in marked sections) ----

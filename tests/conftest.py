"""Shared fixtures: random-weight reference checkpoints built by the real PyTorch stack.

Building a checkpoint needs torch + transformers + sentence-transformers; the
torch-free CI leg never requests these fixtures (its tests are marked
``not torch``).
"""

from __future__ import annotations

import os
import sys

import pytest

# tests/ is not a package (--import-mode=importlib): its shared helper modules
# (kernel_suite.py) are imported by name from here.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The CLI turns on JAX's persistent compilation cache; tests compile in their own
# process and must not read programs an earlier run left in the user's cache.
os.environ.setdefault("TARKA_JAX_COMPILATION_CACHE", "0")


@pytest.fixture(scope="session")
def reference_factory(tmp_path_factory):
    """build(name, **TinySpec fields) -> folder; each distinct spec is built once per session."""
    from tarka_jax.testing.reference import TinySpec, build_reference_model

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

def pytest_collection_modifyitems(config, items):
    """Files holding a ``slow`` test run first (stable order otherwise).

    tests/run_all.sh gives whole files to two pytest-xdist workers; started last (they sort
    late by name), the long multi-process and 8-device files ended each leg on one worker.
    """
    heavy = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in heavy)


# ---- (helpers: add your shared fixtures below this line, in marked sections) ----


# ---- inference API (tokenizer / embedder / CLI) ----------------------------------------------

# One intra-op thread for torch: with JAX's thread pool (and other jobs) on 2 shared
# cores, torch's OpenMP threads oversubscribe and a tiny reference forward pass went
# from 0.04 s to 2 s. Set before any test imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_embedder(tiny_reference):
    """An Embedder on the default tiny reference checkpoint (float32)."""
    from tarka_jax import Embedder

    return Embedder.from_pretrained(tiny_reference)


@pytest.fixture(scope="session")
def jax_only_model(tmp_path_factory) -> str:
    """A small sentence-transformers folder written without torch (random init_params).

    For the torch-free leg: tokenizer, Embedder plumbing, packing, errors and the CLI.
    Not a parity reference (nothing to compare with).
    """
    import json

    import jax
    import numpy as np

    from tarka_jax.convert.st_folder import SentenceTransformerMeta, save_sentence_transformers
    from tarka_jax.nn.config import FULL, SLIDING, DenseSpec, ModelConfig
    from tarka_jax.nn.encoder import init_params
    from tarka_jax.testing.reference import GEMMA_PROMPTS, train_tokenizer

    root = tmp_path_factory.mktemp("jax_only")
    tok_dir, out = str(root / "tok"), str(root / "model")
    train_tokenizer(211, tok_dir)
    with open(f"{tok_dir}/tokenizer_config.json", "w") as f:
        json.dump({"tokenizer_class": "TokenizersBackend", "bos_token": "<bos>",
                   "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "model_max_length": 48}, f)
    config = ModelConfig(
        vocab_size=211, hidden_size=40, intermediate_size=56, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=12, query_pre_attn_scalar=10, layer_types=(SLIDING, FULL),
        sliding_window=8, dense=(DenseSpec(40, 24),), normalize=True)
    # Shapes from an abstract init (no eager Flax), values from numpy: fast, and the
    # norm weights are random too.
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: (rng.standard_normal(s.shape) * 0.1).astype(np.float32), shapes)
    meta = SentenceTransformerMeta(prompts=dict(GEMMA_PROMPTS))
    save_sentence_transformers(out, config, params, meta, tok_dir)
    return out


# ---- safety (output folders, resume checks) --------------------------------------------------


@pytest.fixture(scope="session")
def make_run_folder():
    """write(model_folder, run_dir, config_dict, steps) -> run_dir: a distillation run folder.

    Written by the run's own helpers (run.json, student/, orbax checkpoints of
    ``{step, params, opt_state}``) without training, so tests of what surrounds a run
    (export, resume checks) need no compile. ``config_dict`` is a
    ``DistillConfig.to_dict()``; its optimizer shapes the saved optimizer state. With a
    ``data`` table, run.json records the fingerprints of its training files and of the
    model (as both student and teacher), as a real run does (relative data paths resolve
    against ``base_dir``).
    """

    def write(model_folder: str, run_dir: str, config_dict: dict, steps=(2,),
              data_position: dict | None = None, base_dir: str = ".") -> str:
        import numpy as np

        from tarka_jax.convert import open_model
        from tarka_jax.train import checkpointing as ckpt
        from tarka_jax.train import fingerprint, run_files
        from tarka_jax.train.optim import OptimizerConfig, make_optimizer

        model = open_model(model_folder)
        tx, _ = make_optimizer(OptimizerConfig(**config_dict["optimizer"]),
                               config_dict["train"]["steps"])
        inputs = {}
        if "data" in config_dict:
            inputs = fingerprint.fingerprint_inputs(
                {"data.train": [os.path.join(base_dir, p) for p in config_dict["data"]["train"]]},
                {f"model.{role}": fingerprint.model_fingerprint(model)
                 for role in ("student", "teacher")})
        run = run_files.new_run("distill", config=config_dict, model=model.config.to_dict(),
                                sources={"student": model_folder, "teacher": model_folder},
                                inputs=inputs)
        run_files.write_run_files(run_dir, run, config_text="# test run\n", meta=model.meta,
                                  tokenizer_folder=model.folder)
        mngr = ckpt.manager(run_dir, keep=len(steps), async_save=False)
        for step in steps:
            ckpt.save(mngr, step, {"step": np.int32(step), "params": model.params,
                                   "opt_state": tx.init(model.params)},
                      data_position or {"epoch": 0, "index": 0, "seed": 0})
        mngr.wait_until_finished()
        mngr.close()
        return run_dir

    return write


# ---- writers: ownership, output folders (tests/test_ownership.py, test_safety_write.py) -----


def _snapshot(folder) -> dict[str, str]:
    """relative path -> sha256 of every file (and '' for every folder) below ``folder``."""
    import hashlib

    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder) + "/"] = ""
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="session")
def snapshot():
    """``snapshot(folder)``: what is below a folder, byte for byte (to prove nothing changed)."""
    return _snapshot

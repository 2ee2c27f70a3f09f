"""The largest activation of every layer of a real model on real text (float32, our encoder).

Why: the numeric policy (docs/numerics.md) rests on how large Gemma 3's residual stream gets:
float16 (max 65,504) is refused, bfloat16 keeps float32's range but 8 bits of mantissa.
This measures it on the held-out texts of ``real_sets.py`` (docstring queries and bodies,
stdlib code) with and without prompts, up to ``--max-seq-length`` tokens, and prints per layer
the largest ``|x|`` of its output (the residual stream), the channel where it occurs, how many
texts exceed float16's maximum, and bfloat16's rounding step at that size.

    python benchmarks/real_activations.py --model DIR [--texts 96] [--max-seq-length 512] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import real_sets  # noqa: E402

F16_MAX = 65504.0


def layer_peaks(embedder, texts: list[str], prompt: str | None, batch: int = 4) -> np.ndarray:
    """``[texts, layers + 2, 2]``: per text, the peak |x| and its channel after the scaled
    embedding (row 0), each layer (rows 1..L) and the final norm (row L + 1)."""
    import jax

    from tarka_jax.nn.encoder import EmbeddingModel

    model = EmbeddingModel(embedder.config)

    def run(params, ids, seg, pos):
        final, state = model.apply(
            {"params": params}, ids, seg, pos, method=EmbeddingModel.token_embeddings,
            capture_intermediates=lambda m, name: name == "__call__" and (
                m.name.startswith("layers_") or m.name == "embed_tokens"))
        inter = state["intermediates"]["encoder"]
        scale = np.sqrt(embedder.config.hidden_size)
        outs = [inter["embed_tokens"]["__call__"][0] * scale]
        outs += [inter[f"layers_{i}"]["__call__"][0] for i in range(embedder.config.num_layers)]
        return [*outs, final]

    run = jax.jit(run)
    rows = []
    for start in range(0, len(texts), batch):
        b = embedder.tokenizer(texts[start:start + batch], prompt=prompt, pad_to_multiple_of=64)
        outs = run(embedder.params, b["input_ids"], b["segment_ids"], b["positions"])
        real = np.asarray(b["segment_ids"]) > 0  # [B, T]
        per = []
        for x in outs:
            a = np.where(real[..., None], np.abs(np.asarray(x)), 0.0)  # [B, T, E]
            flat = a.reshape(a.shape[0], -1)
            arg = flat.argmax(1)
            per.append(np.stack([flat.max(1), arg % a.shape[-1]], 1))  # [B, 2]
        rows.append(np.stack(per, 1))  # [B, L + 2, 2]
    return np.concatenate(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--texts", type=int, default=96, help="texts per kind")
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from tarka_jax import Embedder

    model = Embedder.from_pretrained(os.path.expanduser(args.model),
                                     max_seq_length=args.max_seq_length)
    doc, code = real_sets.docstring_pairs(), real_sets.code_pairs()
    n = args.texts
    kinds = {"query (query prompt)": ([d["query"] for d in doc[:n]], model.prompts.get("query")),
             "docstring body (document prompt)": ([d["document"] for d in doc[:n]],
                                                  model.prompts.get("document")),
             "code (no prompt)": ([c["document"] for c in code[:n]], None)}
    start = time.perf_counter()
    peaks = {k: layer_peaks(model, texts, prompt) for k, (texts, prompt) in kinds.items()}
    every = np.concatenate(list(peaks.values()))  # [N, L + 2, 2]
    names = (["embedding x sqrt(E)"] + [f"layer {i}" for i in range(model.config.num_layers)]
             + ["final norm"])
    print(f"{len(every)} texts, up to {args.max_seq_length} tokens, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"{'output of':22s}{'max |x|':>10s}{'channel':>9s}{'median':>10s}"
          f"{'> f16 max':>11s}{'bf16 step':>11s}")
    table = []
    for i, name in enumerate(names):
        values = every[:, i, 0]
        top = int(values.argmax())
        peak, channel = float(values[top]), int(every[top, i, 1])
        over = int((values > F16_MAX).sum())
        step = 2.0 ** (np.floor(np.log2(peak)) - 7) if peak > 0 else 0.0
        table.append({"output": name, "max": peak, "channel": channel,
                      "median": float(np.median(values)), "texts_over_f16": over,
                      "bf16_step_at_max": step})
        print(f"{name:22s}{peak:10.0f}{channel:9d}{np.median(values):10.0f}"
              f"{over:>6d}/{len(values):<4d}{step:11.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M"), "texts": len(every),
                       "max_seq_length": args.max_seq_length, "layers": table}, f, indent=2)


if __name__ == "__main__":
    main()

"""What the notebooks (``notebooks/``) call: comparisons, small experiment set-ups and plots.

The notebooks hold no logic of their own; each cell calls the library or one of
these helpers, so what a notebook shows is what the package does (and CI runs it).
matplotlib is imported lazily: only the ``plot_*`` functions need it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np

from tarka_jax.testing.demo import retrieval_metrics


def _plt():
    import matplotlib.pyplot as plt

    return plt


def shorten(text: str, width: int = 40) -> str:
    """One line of at most ``width`` characters (labels for plots and tables)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def show_table(rows: Sequence[dict], floats: str = "{:.4g}") -> str:
    """Rows of dicts as an aligned plain-text table (printed and returned)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[floats.format(r[k]) if isinstance(r.get(k), float) else str(r.get(k, ""))
              for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    text = "\n".join(lines)
    print(text)
    return text


# ---- quickstart -----------------------------------------------------------------------------


def plot_similarity(scores: np.ndarray, queries: Sequence[str], documents: Sequence[str],
                    ax=None, title: str = "query × document cosine similarity"):
    """Heatmap of a ``[len(queries), len(documents)]`` similarity matrix, values written in."""
    plt = _plt()
    scores = np.asarray(scores)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.9 * len(documents), 1.0 + 0.5 * len(queries)))
    im = ax.imshow(scores, cmap="viridis")
    ax.set_xticks(range(len(documents)), [shorten(d, 24) for d in documents], rotation=45,
                  ha="right", fontsize=7)
    ax.set_yticks(range(len(queries)), [shorten(q, 40) for q in queries], fontsize=7)
    for i, j in np.ndindex(scores.shape):
        ax.text(j, i, f"{scores[i, j]:.2f}", ha="center", va="center", fontsize=6,
                color="white" if scores[i, j] < scores.max() - 0.3 * np.ptp(scores) else "black")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.03)
    ax.figure.tight_layout()
    return ax


def matryoshka_tradeoff(model, pairs: Sequence[dict], dims: Sequence[int],
                        batch_size: int = 32) -> list[dict]:
    """Held-out retrieval when only the first ``dim`` coordinates are kept, per dim.

    Encodes once at full width and truncates (what ``truncate_dim`` does: cut after
    the model's normalisation; cosine similarity renormalises). Rows: ``dim``,
    ``recall@1``, ``mrr`` and ``bytes`` (float32 storage per vector).
    """
    q = model.encode_query([p["summary"] for p in pairs], batch_size=batch_size)
    d = model.encode_document([p["body"] for p in pairs], batch_size=batch_size)
    rows = []
    for dim in dims:
        m = retrieval_metrics(q[:, :int(dim)], d[:, :int(dim)])
        rows.append({"dim": int(dim), "recall@1": m["recall@1"], "mrr": m["mrr"],
                     "bytes": 4 * int(dim)})
    return rows


def plot_matryoshka(rows: Sequence[dict], ax=None, title: str = "Matryoshka truncation"):
    """MRR and recall@1 against the kept dimension (log axis)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    dims = [r["dim"] for r in rows]
    for key, marker in (("mrr", "o"), ("recall@1", "s")):
        ax.plot(dims, [r[key] for r in rows], marker=marker, label=key)
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_xlabel("embedding dimensions kept (truncate_dim)")
    ax.set_ylabel("held-out retrieval")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax


# ---- convert --------------------------------------------------------------------------------


def folder_listing(folder: str) -> list[str]:
    """Relative paths and sizes of the files in a model folder."""
    out = []
    for root, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            path = os.path.join(root, name)
            out.append(f"{os.path.relpath(path, folder)}  ({os.path.getsize(path):,} bytes)")
    return out


def param_shapes(params, limit: int | None = 12) -> list[str]:
    """``path: shape`` of the first ``limit`` leaves of a param tree (our Flax layout)."""
    import jax

    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    lines = ["/".join(str(getattr(k, "key", k)) for k in path) + f": {tuple(np.shape(x))}"
             for path, x in flat]
    return lines if limit is None else lines[:limit] + ([f"... {len(lines) - limit} more"]
                                                        if len(lines) > limit else [])


def parity_table(models: dict, texts: Sequence[str], reference: str) -> list[dict]:
    """Embed ``texts`` with each named model; max |difference| and min cosine vs ``reference``.

    Models only need ``encode`` (an Embedder and a SentenceTransformer both qualify).
    """
    out = {name: np.asarray(m.encode(list(texts)), np.float32) for name, m in models.items()}
    ref = out[reference]
    rows = []
    for name, emb in out.items():
        cos = np.sum(emb * ref, -1) / (np.linalg.norm(emb, axis=-1) * np.linalg.norm(ref, axis=-1))
        rows.append({"model": name, "shape": str(emb.shape),
                     "max_abs_diff": float(np.max(np.abs(emb - ref))),
                     "min_cosine": float(np.min(cos))})
    return rows


# ---- distill --------------------------------------------------------------------------------


def tiny_distill_config(workdir: str, *, steps: int = 60, eval_every: int = 20):
    """The ``examples/distill_tiny.toml`` run with its tiny models written to ``workdir``.

    Returns the checked :class:`~tarka_jax.distill.config.DistillConfig` (shortened to
    ``steps``, progress bar off) whose teacher and student live in ``workdir/tiny_models``.
    """
    import tomllib

    from tarka_jax.distill.config import parse_config
    from tarka_jax.testing.demo import repo_root
    from tarka_jax.testing.tiny import write_tiny_models

    examples = os.path.join(repo_root(), "examples")
    with open(os.path.join(examples, "distill_tiny.toml"), "rb") as f:
        data = tomllib.load(f)
    teacher, student = write_tiny_models(os.path.join(workdir, "tiny_models"))
    data["model"].update(teacher=teacher, student=student)
    data["train"].update(steps=steps, eval_every=eval_every, log_every=min(
        data["train"].get("log_every", 10), eval_every))
    data["checkpoint"].update(every=steps)
    data.setdefault("logging", {})["progress"] = False
    return parse_config(data, base_dir=examples)


def plot_metrics(records: Sequence[dict], train_keys: Sequence[str] = ("loss", "cosine", "kl"),
                 eval_keys: Sequence[str] = ("eval_cosine", "eval_top1"), title: str = ""):
    """Training terms (left) and held-out evaluation (right) against the step.

    ``records``: :func:`tarka_jax.train.metrics.read_metrics` of a run folder.
    """
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, keys in ((left, train_keys), (right, eval_keys)):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="." if ax is right else None, label=key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    left.set_title("training loss terms")
    right.set_title("held-out agreement with the teacher")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- kernels --------------------------------------------------------------------------------


def attention_inputs(batch: int = 2, length: int = 64, heads: int = 4, kv_heads: int = 1,
                     head_dim: int = 64, *, padded: Sequence[int] = (0, 13),
                     packed: bool = True, seed: int = 0, dtype="float32"):
    """Random q, k, v and segment ids: row ``b`` ends in ``padded[b]`` padding tokens,
    and with ``packed`` the first row holds two texts (segments 1 and 2)."""
    import jax
    import jax.numpy as jnp

    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (batch, length, heads, head_dim), dtype)
    k = jax.random.normal(kk, (batch, length, kv_heads, head_dim), dtype)
    v = jax.random.normal(kv, (batch, length, kv_heads, head_dim), dtype)
    seg = np.ones((batch, length), np.int32)
    for b in range(batch):
        pad = padded[b % len(padded)]
        if pad:
            seg[b, length - pad:] = 0
    if packed:
        seg[0, length // 3:][seg[0, length // 3:] > 0] = 2
    return q, k, v, jnp.asarray(seg)


def compare_attention(implementations: Sequence[str] = ("xla", "pallas_triton"),
                      windows: Sequence = (None, (8, 8)), *, reference: str = "xla",
                      grads: bool = True, timing_repeats: int = 20, **input_kwargs) -> list[dict]:
    """Each implementation against ``reference``: forward (and gradient) max |difference|.

    On CPU the Pallas kernels run in interpret mode (a correctness check, not a
    speed one), so times are only measured on a GPU; elsewhere ``ms`` is None.
    """
    import jax
    import jax.numpy as jnp

    from tarka_jax.kernels import attention

    q, k, v, seg = attention_inputs(**input_kwargs)
    on_gpu = jax.default_backend() == "gpu"
    rows = []
    for window in windows:
        def run(impl, q, k, v, window=window):
            return attention(q, k, v, seg, window=window, implementation=impl)

        def loss(impl, q, k, v):
            return jnp.sum(run(impl, q, k, v) ** 2)

        results = {}
        for impl in implementations:
            fwd = jax.jit(lambda q, k, v, impl=impl: run(impl, q, k, v))
            out = fwd(q, k, v)
            grad = (jax.jit(jax.grad(lambda q, k, v, impl=impl: loss(impl, q, k, v),
                                     argnums=(0, 1, 2)))(q, k, v) if grads else None)
            ms = None
            if on_gpu:
                fwd(q, k, v).block_until_ready()
                t0 = time.perf_counter()
                for _ in range(timing_repeats):
                    res = fwd(q, k, v)
                res.block_until_ready()
                ms = 1e3 * (time.perf_counter() - t0) / timing_repeats
            results[impl] = (out, grad, ms)
        ref_out, ref_grad, _ = results[reference]
        for impl, (out, grad, ms) in results.items():
            row = {"window": str(window), "implementation": impl,
                   "forward_max_diff": float(jnp.max(jnp.abs(out - ref_out)))}
            if grads:
                row["grad_max_diff"] = float(max(jnp.max(jnp.abs(a - b))
                                                 for a, b in zip(grad, ref_grad)))
            row["ms"] = ms
            rows.append(row)
    return rows


def plot_mask(segment_ids, window=None, row: int = 0, ax=None):
    """Which keys each query of one row may see (``tarka_jax.kernels.mask``), as an image."""
    plt = _plt()
    from tarka_jax.kernels.mask import allowed_pairs

    allowed = np.asarray(allowed_pairs(segment_ids, window))[row]
    if ax is None:
        _, ax = plt.subplots(figsize=(3.4, 3.4))
    ax.imshow(allowed, cmap="Greys", interpolation="nearest")
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(f"allowed pairs, window={window}")
    ax.figure.tight_layout()
    return ax


__all__ = [
    "attention_inputs",
    "compare_attention",
    "folder_listing",
    "matryoshka_tradeoff",
    "param_shapes",
    "parity_table",
    "plot_mask",
    "plot_matryoshka",
    "plot_metrics",
    "plot_similarity",
    "shorten",
    "show_table",
    "tiny_distill_config",
]

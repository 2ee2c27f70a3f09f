"""Hostile sizes are bounded before work is spent on them (issue 26, item 3).

Config values are checked against ceilings that admit every Gemma-3-family encoder;
``max_seq_length`` from sentence_bert_config.json is capped by the model's positions;
``batch_size`` costs O(1) in the planner; a long text that will be truncated is cut at a
character bound before it is tokenised, with the same ids.

The hostile cases run in one child process under ``RLIMIT_DATA`` and a timeout (JAX's
address-space reservations make ``RLIMIT_AS`` useless), so a regression fails the test
instead of hanging CI or getting it OOM-killed. Torch-free.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap

import pytest

from tarka_jax.inference import batching
from tarka_jax.nn.config import embeddinggemma_300m
from tarka_jax.testing.wordpiece import long_text
from tarka_jax.text.tokenizer import TextTokenizer

DATA_LIMIT = 3 << 30  # bytes of private data the child may map (a tiny model needs ~0.3 GB)
REAL_GEMMA = os.path.expanduser("~/.cache/tarka-real/embeddinggemma-300m")


def _bounded(code: str, *args: str, timeout: float = 180) -> dict:
    """Run ``code`` in a child Python under RLIMIT_DATA and a timeout; its last stdout line
    is a JSON object of results."""
    limit = ("import resource\n"  # first, before anything is imported (no preexec_fn: threads)
             f"resource.setrlimit(resource.RLIMIT_DATA, ({DATA_LIMIT}, {DATA_LIMIT}))\n")
    try:
        r = subprocess.run([sys.executable, "-c", limit + textwrap.dedent(code), *args],
                           capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "TARKA_JAX_COMPILATION_CACHE": "0"})
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hostile input not bounded: no answer in {timeout} s ({e.stdout!r:.500})")
    assert r.returncode == 0, f"child failed ({r.returncode}): {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


CONFIG_CASES = {  # config.json key -> a hostile value
    "num_hidden_layers": 1_000_000, "num_attention_heads": 0, "num_key_value_heads": 0,
    "vocab_size": 10**12, "hidden_size": 10**9, "intermediate_size": 10**12,
    "max_position_embeddings": 10**12, "head_dim": 10**9, "sliding_window": 10**12,
    "sliding_window_pattern": 0,  # (with no layer_types list, as in most config.json files)
}

_CONFIG_CHILD = """
    import json, os, shutil, signal, sys, time
    from tarka_jax.convert import open_model
    src, tmp, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    out = {}

    def timed_out(*_):
        raise TimeoutError("no answer in 20 s")

    signal.signal(signal.SIGALRM, timed_out)
    for key, value in cases.items():
        signal.alarm(20)
        folder = os.path.join(tmp, key)
        shutil.copytree(src, folder)
        config = json.load(open(os.path.join(folder, "config.json")))
        config.pop("layer_types")  # layers from num_hidden_layers and the pattern
        config[key] = value
        json.dump(config, open(os.path.join(folder, "config.json"), "w"))
        start = time.perf_counter()
        try:
            open_model(folder)
            out[key] = ["loaded", None]
        except Exception as e:
            out[key] = [type(e).__name__, str(e)[:300], time.perf_counter() - start]
        signal.alarm(0)
    print(json.dumps(out))
"""


def test_hostile_config_sizes_are_refused_before_any_work(jax_only_model, tmp_path):
    got = _bounded(_CONFIG_CHILD, jax_only_model, str(tmp_path), json.dumps(CONFIG_CASES))
    for key, value in CONFIG_CASES.items():
        kind, message, *_ = got[key]
        assert kind == "ConfigError", (key, got[key])
        assert f"config.json: {key} = {value}" in message and "outside" in message, message
        assert os.path.join(tmp_path, key) in message  # names the file


def test_the_ceilings_admit_every_real_gemma3_config():
    """Gemma 3 27B (the family's largest text config in transformers), EmbeddingGemma, and
    the real EmbeddingGemma folder when this machine has it."""
    from tarka_jax.nn.config import backbone_from_hf
    from tarka_jax.nn.size_limits import LIMITS

    gemma3_27b = {"vocab_size": 262_208, "hidden_size": 5376, "intermediate_size": 21_504,
                  "num_hidden_layers": 62, "num_attention_heads": 32, "num_key_value_heads": 16,
                  "head_dim": 128, "max_position_embeddings": 131_072, "sliding_window": 1024}
    for key, value in gemma3_27b.items():
        assert LIMITS[key][0] <= value <= LIMITS[key][1], key
    backbone_from_hf({"model_type": "gemma3_text", "use_bidirectional_attention": True,
                      "query_pre_attn_scalar": 168, **gemma3_27b})
    embeddinggemma_300m()  # vocabulary 262,144
    if os.path.isdir(REAL_GEMMA):
        backbone_from_hf(json.load(open(os.path.join(REAL_GEMMA, "config.json"))))


def test_zero_heads_converter_exits_2_naming_the_key(jax_only_model, tmp_path, capsys):
    from tarka_jax.convert.hf_to_flax import main

    folder = str(tmp_path / "model")
    shutil.copytree(jax_only_model, folder)
    config = json.load(open(os.path.join(folder, "config.json")))
    config["num_attention_heads"] = 0
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    assert main([folder, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "num_attention_heads = 0" in err and "\n" not in err, err


_RUNTIME_CHILD = """
    import json, os, resource, shutil, signal, sys, time, warnings
    import numpy as np
    from tarka_jax import Embedder
    src, tmp = sys.argv[1], sys.argv[2]
    out = {}

    def timed_out(*_):
        raise TimeoutError("no answer in 60 s")

    signal.signal(signal.SIGALRM, timed_out)

    def case(name, fn):  # each case alone: one hang or failure does not hide the others
        signal.alarm(60)
        try:
            out[name] = fn()
        except BaseException as e:
            out[name] = f"{type(e).__name__}: {e}"[:300]
        finally:
            signal.alarm(0)

    def capped():
        folder = os.path.join(tmp, "seq")
        shutil.copytree(src, folder)
        json.dump({"max_seq_length": 10**12, "do_lower_case": False},
                  open(os.path.join(folder, "sentence_bert_config.json"), "w"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = Embedder.from_pretrained(folder)
        return [model.max_seq_length, model.config.max_position_embeddings,
                [str(w.message) for w in caught if "max_seq_length" in str(w.message)]]

    model = Embedder.from_pretrained(src)
    texts = ["a short text", "another, slightly longer text to embed", "x", "y z"]
    for pack in (True, False):
        ref = model.encode(texts, batch_size=32, pack=pack)
        case(f"batch_1e10_pack_{pack}", lambda: float(np.abs(
            model.encode(texts, batch_size=10**10, pack=pack) - ref).max()))
    model.max_seq_length = 16
    line = ("word " * 10_000_000)[:-1]  # one 50 MB line
    case("line", lambda: model.tokenizer.encode([line])[0] == model.tokenizer.backend.encode(
        line[:100_000]).ids)
    case("capped", capped)
    for name, value in (("buckets_per_octave", 10**9), ("pack_segments", 10**12)):
        case(name, lambda: Embedder.from_pretrained(src, **{name: value}) and "accepted")
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
"""


def test_hostile_runtime_sizes_are_bounded(jax_only_model, tmp_path):
    got = _bounded(_RUNTIME_CHILD, jax_only_model, str(tmp_path))
    # --batch-size 10**10: the same embeddings (the planner was a loop over range(batch_size))
    assert got["batch_1e10_pack_True"] == got["batch_1e10_pack_False"] == 0.0, got
    # one 50 MB line truncated to 16 tokens: cut before tokenising, the same ids
    assert got["line"] is True, got
    # sentence_bert_config.json's 10**12 is capped at the positions, with a warning
    max_seq_length, positions, warned = got["capped"]
    assert max_seq_length == positions and "exceeds the model's" in warned[0], got
    # constructor sizes that set a loop's length (buckets) or a pooled array's (segments)
    assert got["buckets_per_octave"].startswith("UsageError: buckets_per_octave must be"), got
    assert got["pack_segments"].startswith("UsageError: pack_segments must be"), got


def test_row_counts_in_closed_form_equal_the_loop():
    def loop(b, m, d):
        return tuple(sorted({batching.round_rows(n, b, m, d) for n in range(1, b + 1)}))

    for b in range(1, 70):
        for m in (1, 2, 3, 4, 8):
            for d in (1, 2, 3, 4, 8):
                counts = batching.RowCounts(b, m, d)
                want = loop(b, m, d)
                assert tuple(counts) == want and len(counts) == len(want), (b, m, d)
                for rows in range(0, 2 * b + 2):
                    within = [n for n in want if n <= rows]
                    assert counts.largest_within(rows) == (within[-1] if within else None)
    huge = batching.RowCounts(10**10)
    assert len(huge) == 2_500_000_003 and huge.largest_within(512) == 512
    assert batching.pass_rows(64, 10**10, 512) == 8
    assert batching.compile_bound([16, 32], 10**10) == 2 * 2_500_000_003


# ---- the character cut gives the ids of the uncut text -------------------------------------


class _Spy:
    """A tokenizers backend that records the longest text it was given."""

    def __init__(self, backend):
        self.backend, self.longest = backend, 0

    def encode_batch(self, texts, add_special_tokens=True):
        self.longest = max([self.longest, *map(len, texts)])
        return self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)


def _families(seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    return {
        "prose": long_text(20_000, seed),
        "no spaces": "".join(rng.choice("abcdefghij") for _ in range(60_000)),
        "spaces first": " " * 50_000 + long_text(300, seed),  # BERT drops whitespace: widened
        "newlines": ("\n" * 37 + "x") * 2000,
        "unicode": "".join(rng.choice(["é", "\u0301", "😀", "中", "ﬁ", "a", " ", "\t"])
                           for _ in range(60_000)),
    }


def _check_cut(tok: TextTokenizer, texts: dict[str, str], prompt: str, cut: set[str]) -> None:
    """Ids equal the uncut backend's for both sides; the texts in ``cut`` reach the backend
    cut to the bound (right side; the others are widened: their tokenizer drops characters)."""
    from tarka_jax.text.truncation import MARGIN, encode_bounded

    bound = len(prompt) + (tok.max_seq_length + MARGIN) * tok.widest_token_chars
    for side in ("right", "left"):
        tok.truncation_side = side
        tok.set_max_seq_length(tok.max_seq_length)
        for name, text in texts.items():
            want = tok.backend.encode(prompt + text).ids  # the backend alone: no cut
            spy = _Spy(tok.backend)
            got = encode_bounded(spy, [text], prompt, tok.max_seq_length, side, tok.widest_token_chars)
            assert got[0].ids == want, (name, side)
            if side == "right" and name in cut:
                assert spy.longest <= bound, (name, spy.longest, bound)


@pytest.mark.parametrize("max_seq_length", [8, 48])
def test_a_cut_text_keeps_the_ids_of_the_whole_text(jax_only_model, max_seq_length):
    tok = TextTokenizer.from_folder(jax_only_model, max_seq_length)
    _check_cut(tok, _families(), "task: search result | query: ", {"prose"})
    assert tok.encode(["x" * 10_000, "short"]) == [tok.backend.encode(t).ids
                                                   for t in ("x" * 10_000, "short")]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(REAL_GEMMA), reason="needs the real EmbeddingGemma folder")
def test_a_cut_text_keeps_the_ids_with_embeddinggemmas_tokenizer():
    """The tokenizer the bound was measured on (one BPE word per text: text/truncation.py)."""
    tok = TextTokenizer.from_folder(REAL_GEMMA, 256)
    assert tok.widest_token_chars == 31
    texts = _families(1)
    texts["repeated"] = "a" * 100_000
    texts["runs"] = "a" + " " * 30_000 + "b" + "  " * 3000 + "c"
    _check_cut(tok, texts, "task: search result | query: ", set(texts))

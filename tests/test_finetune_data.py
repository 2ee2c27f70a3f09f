"""Pair data: files and filters, per-column prompts, batches without duplicate texts, resume."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest


def _rows(n=40, dup_every=4):
    """Rows whose positives repeat every ``dup_every`` rows (an in-batch false negative)."""
    return [(f"question {i}", f"answer {i // dup_every if i % dup_every == 0 else i}")
            for i in range(n)]


def test_finetune_batches_never_repeat_a_text():
    from tarka_jax.finetune.data import no_duplicate_batches

    rows = [(f"q{i}", f"doc {i % 7}") for i in range(60)]  # only 7 distinct positives
    order = np.random.default_rng(0).permutation(len(rows)).tolist()
    batches = no_duplicate_batches(rows, order, 7)
    assert len(batches) >= 7  # rows wait for a later batch instead of being lost early
    used = [i for b in batches for i in b]
    assert len(used) == len(set(used))
    for b in batches:
        assert len(b) == 7
        texts = [t for i in b for t in rows[i]]
        assert len(texts) == len(set(texts)), b
    # A batch no rows can fill is not formed (and nothing else goes wrong).
    assert no_duplicate_batches(rows, order, 8) == []


def test_finetune_pair_batches_are_seeded_and_resume_exactly(jax_only_model):
    from tarka_jax.finetune.data import ColumnTokenizer, PairBatches
    from tarka_jax.text.tokenizer import TextTokenizer

    tok = ColumnTokenizer(TextTokenizer.from_folder(jax_only_model), ["query: ", ""], (16, 32))
    rows = _rows()

    def run(n, state=None, seed=0):
        it = PairBatches(rows, tok, 6, seed)
        if state is not None:
            it.set_state(state)
        out = [next(it) for _ in range(n)]
        return out, it.get_state()

    whole, _ = run(12)  # 40 rows, batch 6: several epochs
    first, state = run(5)
    rest, _ = run(7, state)
    for a, b in zip(whole, first + rest):
        for ca, cb in zip(a, b):
            for k in ca:
                np.testing.assert_array_equal(ca[k], cb[k])
    other, _ = run(1, seed=1)
    assert not np.array_equal(other[0][0]["input_ids"], whole[0][0]["input_ids"])
    # Column 0 carries its prompt, column 1 none.
    query = TextTokenizer.from_folder(jax_only_model).encode(["query: x"])[0]
    assert list(whole[0][0]["input_ids"][0][:len(query) - 2]) == query[:-2]
    with pytest.raises(ValueError, match="batch_size is 6 but the config gives 8"):
        PairBatches(rows, tok, 8, 0).set_state(state)


def test_finetune_rows_from_files_with_filters_and_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tarka_jax.finetune.data import DataError, read_rows

    records = [{"q": f"q{i}", "d": f"d{i}", "split": "train" if i % 3 else "test"}
               for i in range(9)]
    gz = tmp_path / "pairs.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in records) + "\n\n")
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "pairs.parquet")
    for path in (gz, tmp_path / "pairs.parquet"):
        rows = read_rows([str(path)], ["q", "d"], {"split": "train"})
        assert rows == [(f"q{i}", f"d{i}") for i in range(9) if i % 3]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "a", "d": "b"}\n{"q": "a", "d": ""}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 needs non-empty string field\(s\) \['d'\]"):
        read_rows([str(bad)], ["q", "d"])
    with pytest.raises(DataError, match="hold no rows where"):
        read_rows([str(gz)], ["q", "d"], {"split": "dev"})
    (tmp_path / "pairs.csv").write_text("q,d\n")
    with pytest.raises(DataError, match="must end in one of"):
        read_rows([str(tmp_path / "pairs.csv")], ["q", "d"])
    same = tmp_path / "same.jsonl"
    same.write_text('{"q": "a", "d": "b", "n": "b"}\n')
    with pytest.raises(DataError, match="same.jsonl:1: a negative equals the positive"):
        read_rows([str(same)], ["q", "d", "n"])
    # The shared JSON-lines reader (tarka_jax.files.jsonfiles.read_jsonl): file:line for every fault.
    faults = {"list.jsonl.gz": (b'{"q": "a", "d": "b"}\n[1, 2]\n',
                                "list.jsonl.gz:2 is not a JSON object"),
              "latin1.jsonl": (b'{"q": "a", "d": "b"}\n{"q": "\xe9", "d": "b"}\n',
                               "latin1.jsonl:2: not valid UTF-8"),
              "cut.jsonl.gz": (None, "cut.jsonl.gz: ")}
    for name, (data, message) in faults.items():
        path = tmp_path / name
        if data is None:  # a truncated gzip stream
            data = gzip.compress(b'{"q": "a", "d": "b"}\n' * 50)[:30]
        elif name.endswith(".gz"):
            data = gzip.compress(data)
        path.write_bytes(data)
        with pytest.raises(DataError, match=message):
            read_rows([str(path)], ["q", "d"])


def test_the_example_configs_load_and_find_their_data():
    """examples/*.toml (the README's and BENCHMARKS' commands) pass their schema checks;
    the fine-tuning example finds its 1,886 training and 472 held-out pairs."""
    import os

    from tarka_jax.distill.config import load_config as load_distill
    from tarka_jax.finetune.config import load_config as load_finetune
    from tarka_jax.finetune.run import prepare

    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "examples")
    load_distill(os.path.join(examples, "distill_tiny.toml"))
    prep = prepare(load_finetune(os.path.join(examples, "finetune_demo.toml")))
    assert (len(prep.train_rows), len(prep.eval_rows)) == (1886, 472)

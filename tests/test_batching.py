"""The inference shape policy (tarka_jax.batching): grouping, row counts, compile bound, order.

Pure numpy: no model, no JAX. The end-to-end check that the policy leaves
embeddings unchanged is in tests/test_embedder.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tarka_jax import batching


def _random_ids(rng, n, low=1, high=2048):
    lengths = np.exp(rng.uniform(np.log(low), np.log(high), n)).astype(int)
    return [list(rng.integers(5, 1000, size=int(m))) for m in lengths]


def test_row_lengths_are_finer_than_powers_of_two():
    assert batching.row_lengths(512) == (16, 32, 64, 128, 192, 256, 320, 384, 448, 512)
    widths = batching.row_lengths(2048)
    assert widths[:4] == (16, 32, 64, 128) and widths[-1] == 2048
    gaps = np.diff(widths)
    assert gaps.max() <= 128 and len(widths) == 22
    assert batching.row_lengths(20) == (16, 20)
    assert batching.row_lengths(10) == (10,)


def test_pack_groups_keep_texts_near_their_own_length():
    widths = batching.pack_widths(2048)
    assert widths == (64, 128, 256, 512, 1024, 2048)
    assert batching.pack_width_for(20, widths) == 64
    assert batching.pack_width_for(300, widths) == 1024
    assert batching.pack_width_for(1500, widths) == 2048
    rng = np.random.default_rng(0)
    ids = _random_ids(rng, 300)
    for p in batching.plan_packed(ids, 32, widths):
        width = p.arrays["input_ids"].shape[1]
        lengths = np.array([len(ids[i]) for i in p.texts])
        assert (lengths <= width).all()
        if width != widths[0]:  # every text but the shortest group's fills > a quarter row
            assert (4 * lengths > width).all() or width == widths[-1] and (lengths > 256).all()
        if width == 2048:
            assert lengths.min() > 512  # short texts never ride in a 2048 row


@pytest.mark.parametrize("pack", [True, False])
def test_every_text_lands_once_and_order_is_restorable(pack):
    rng = np.random.default_rng(1)
    ids = _random_ids(rng, 157, high=700)
    widths = batching.pack_widths(1024) if pack else batching.row_lengths(1024)
    plan = (batching.plan_packed if pack else batching.plan_sorted)(ids, 16, widths, pad_id=0)
    seen = np.concatenate([p.texts for p in plan])
    assert sorted(seen.tolist()) == list(range(len(ids)))
    for p in plan:
        for text, row, slot in zip(p.texts, p.row, p.slot):
            sel = p.arrays["segment_ids"][row] == slot + 1
            np.testing.assert_array_equal(p.arrays["input_ids"][row][sel], ids[text])
            np.testing.assert_array_equal(p.arrays["positions"][row][sel],
                                          np.arange(len(ids[text])))
        assert p.arrays["segment_ids"].max() <= p.segments


def test_partial_passes_round_to_a_multiple_of_eight():
    assert [batching.round_rows(n, 32) for n in (1, 2, 3, 5, 8, 9, 17, 25, 32, 40)] == \
        [1, 2, 4, 8, 8, 16, 24, 32, 32, 32]
    assert batching.row_counts(32) == (1, 2, 4, 8, 16, 24, 32)


@pytest.mark.parametrize("devices", [1, 2, 4, 8, 3])
def test_row_counts_divide_by_the_device_count(devices):
    rng = np.random.default_rng(devices)
    ids = _random_ids(rng, 90, high=512)
    for plan in (batching.plan_packed(ids, 32, batching.pack_widths(512), devices=devices),
                 batching.plan_sorted(ids, 30, batching.row_lengths(512), devices=devices)):
        for p in plan:
            assert p.arrays["input_ids"].shape[0] % devices == 0
    assert all(r % devices == 0 for r in batching.row_counts(30, devices=devices))


@pytest.mark.parametrize("pack", [True, False])
def test_compile_bound_holds_over_many_calls(pack):
    """Shapes over many random calls stay within the documented bound."""
    rng = np.random.default_rng(2)
    widths = batching.pack_widths(2048) if pack else batching.row_lengths(2048)
    planner = batching.plan_packed if pack else batching.plan_sorted
    shapes = set()
    for _ in range(40):
        ids = _random_ids(rng, int(rng.integers(1, 120)))
        for p in planner(ids, 32, widths):
            shapes.add((*p.arrays["input_ids"].shape, p.segments))
    bound = batching.compile_bound(widths, 32)
    assert bound == (42 if pack else 154)
    assert len(shapes) <= bound
    allowed_rows = set(batching.row_counts(32))
    assert {r for r, _, _ in shapes} <= allowed_rows
    assert {w for _, w, _ in shapes} <= set(widths)

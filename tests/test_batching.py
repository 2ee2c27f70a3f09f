"""The inference shape policy (tarka_jax.inference.batching): grouping, row counts, compile bound, order.

Pure numpy: no model, no JAX. The end-to-end check that the policy leaves
embeddings unchanged is in tests/test_embedder.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tarka_jax.inference import batching


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


def _texts_of(rng, n, low, high):
    return [list(rng.integers(5, 1000, size=int(m))) for m in rng.integers(low, high + 1, n)]


def _slots(plan):
    return sum(p.arrays["input_ids"].size for p in plan)


def _padded_slots(ids, batch_size):
    """What one-text-per-row batches of the longest-first order padded to their longest cost."""
    lengths = sorted((len(x) for x in ids), reverse=True)
    return sum(len(lengths[s:s + batch_size]) * lengths[s]
               for s in range(0, len(lengths), batch_size))


def test_pack_widths():
    assert batching.pack_widths(2048) == (64, 128, 256, 512, 1024, 2048)
    assert batching.pack_widths(300) == (64, 128, 256, 300)
    assert batching.pack_widths(2048, fine=True) == (64, 128, 256, 384, 512, 640, 768, 896,
                                                     1024, 1280, 1536, 1792, 2048)
    assert batching.pack_widths(300, fine=True) == (64, 128, 256, 300)
    assert [batching.segments_for(w) for w in (64, 128, 256, 512, 2048)] == [8, 16, 32, 32, 32]


def test_a_long_rows_free_end_takes_shorter_texts():
    ids = [[7] * 1500, [7] * 500, [7] * 40]
    (p,) = batching.plan_packed(ids, 32, [batching.pack_widths(2048)])
    assert p.arrays["input_ids"].shape == (1, 2048) and sorted(p.row.tolist()) == [0, 0, 0]


def test_short_texts_never_open_a_wide_row():
    """A row is opened at the smallest width holding its first (longest) text, or at the
    call's floor; 20-token texts may fill a long row's free end but never open a wide row."""
    rng = np.random.default_rng(0)
    ids = [[7] * 1900] + _texts_of(rng, 400, 5, 30)
    plan = batching.plan_packed(ids, 32, batching.pack_width_sets(2048), slot_cost=batching.SlotCost(
        dense=1.0, attention=0.001, keys=(None,)))
    wide = [p for p in plan if p.arrays["input_ids"].shape[1] > 128]
    assert len(wide) == 1 and wide[0].arrays["input_ids"].shape[0] == 1
    for p in plan:
        width = p.arrays["input_ids"].shape[1]
        assert (p.arrays["segment_ids"] > 0).sum(axis=1).max() <= width
        assert p.segments == batching.segments_for(width)


@pytest.mark.parametrize("mix", ["queries", "passages", "loguniform", "long"])
@pytest.mark.parametrize("n", [32, 200])
def test_packing_computes_fewer_slots_than_padding(mix, n):
    """On the benchmark's length mixes (plus prompts), packed plans, rounding included,
    cost fewer token slots than sentence-transformers' padded batches of 32 (long texts:
    no more; most of them fill a 2048 row alone)."""
    rng = np.random.default_rng(n)
    ids = (_random_ids(rng, n, low=12) if mix == "loguniform" else
           _texts_of(rng, n, *{"queries": (12, 40), "passages": (107, 310),
                               "long": (800, 2048)}[mix]))
    plan = batching.plan_packed(ids, 32, batching.pack_width_sets(2048))
    used = sum(len(x) for x in ids)
    if mix == "long":
        assert _slots(plan) <= 1.05 * _padded_slots(ids, 32)
    else:
        assert _slots(plan) < _padded_slots(ids, 32)
        assert used / _slots(plan) > (0.75 if n == 32 else 0.85)


def test_the_cheapest_floor_is_chosen():
    """Five 200-token texts fill five 256 rows (a pass rounded to 8 rows); raising the floor
    to 512 puts them two to a row beside the 400-token text: fewer slots, wider rows. The
    planner takes that when attention is free and keeps the narrow rows when it is dear."""
    ids = [[7] * 400] + [[7] * 200] * 5
    costly = batching.SlotCost(dense=1.0, attention=1.0, keys=(None,))
    free = batching.SlotCost(dense=1.0, attention=0.0, keys=(None,))
    narrow = batching.plan_packed(ids, 32, [batching.pack_widths(2048)], slot_cost=costly)
    wide = batching.plan_packed(ids, 32, [batching.pack_widths(2048)], slot_cost=free)
    shapes = lambda plan: sorted(p.arrays["input_ids"].shape for p in plan)
    assert shapes(narrow) == [(1, 512), (8, 256)]
    assert shapes(wide) == [(4, 512)]


def test_the_fine_widths_win_for_long_documents():
    """A long text alone in a row wastes at most 256 slots at the fine widths and up to
    half the row at powers of two; on a long mix the planner takes the fine set."""
    rng = np.random.default_rng(5)
    ids = _texts_of(rng, 200, 1100, 2048)
    coarse = batching.plan_packed(ids, 32, [batching.pack_widths(2048)])
    both = batching.plan_packed(ids, 32, batching.pack_width_sets(2048))
    assert _slots(both) < 0.9 * _slots(coarse)
    assert len({p.arrays["input_ids"].shape[1] for p in both}) > 2


def test_each_shape_is_charged():
    """Without the per-shape charge a small mixed call splits into a pass per width; with it,
    a few passes (fewer programs to compile) for a few percent more slots."""
    rng = np.random.default_rng(1)
    ids = _random_ids(rng, 32, low=12)
    sets = batching.pack_width_sets(2048)
    free = batching.plan_packed(ids, 32, sets, shape_slots=0)
    charged = batching.plan_packed(ids, 32, sets)
    assert len(charged) <= 3 < 6 <= len(free)
    assert _slots(charged) <= 1.1 * _slots(free)


@pytest.mark.parametrize("pack", [True, False])
def test_every_text_lands_once_and_order_is_restorable(pack):
    rng = np.random.default_rng(1)
    ids = _random_ids(rng, 157, high=700)
    plan = (batching.plan_packed(ids, 16, batching.pack_width_sets(1024)) if pack
            else batching.plan_sorted(ids, 16, batching.row_lengths(1024)))
    seen = np.concatenate([p.texts for p in plan])
    assert sorted(seen.tolist()) == list(range(len(ids)))
    for p in plan:
        for text, row, slot in zip(p.texts, p.row, p.slot):
            sel = p.arrays["segment_ids"][row] == slot + 1
            np.testing.assert_array_equal(p.arrays["input_ids"][row][sel], ids[text])
            np.testing.assert_array_equal(p.arrays["positions"][row][sel],
                                          np.arange(len(ids[text])))
        assert p.arrays["segment_ids"].max() <= p.segments


def test_partial_passes_round_to_a_multiple_of_four():
    """Up to row_multiple rows run as they are (3 rows of queries are not padded to 4);
    above it, a multiple of row_multiple."""
    assert [batching.round_rows(n, 32) for n in (1, 2, 3, 4, 5, 8, 9, 17, 25, 32, 40)] == \
        [1, 2, 3, 4, 8, 8, 12, 20, 28, 32, 32]
    assert batching.row_counts(32) == (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32)
    assert batching.row_counts(32, row_multiple=8) == (1, 2, 3, 4, 5, 6, 7, 8, 16, 24, 32)


@pytest.mark.parametrize("devices", [1, 2, 4, 8, 3])
def test_row_counts_divide_by_the_device_count(devices):
    rng = np.random.default_rng(devices)
    ids = _random_ids(rng, 90, high=512)
    for plan in (batching.plan_packed(ids, 32, batching.pack_width_sets(512), devices=devices),
                 batching.plan_sorted(ids, 30, batching.row_lengths(512), devices=devices)):
        for p in plan:
            assert p.arrays["input_ids"].shape[0] % devices == 0
    assert all(r % devices == 0 for r in batching.row_counts(30, devices=devices))


@pytest.mark.parametrize("pack", [True, False])
def test_compile_bound_holds_over_many_calls(pack):
    """Shapes over many random calls stay within the documented bound."""
    rng = np.random.default_rng(2)
    widths = sorted(set().union(*batching.pack_width_sets(2048)))  # packed: the union of the candidate sets
    shapes = set()
    for _ in range(40):
        ids = _random_ids(rng, int(rng.integers(1, 120)))
        plan = (batching.plan_packed(ids, 32, batching.pack_width_sets(2048)) if pack
                else batching.plan_sorted(ids, 32, batching.row_lengths(2048)))
        shapes.update((*p.arrays["input_ids"].shape, p.segments) for p in plan)
    if not pack:
        widths = list(batching.row_lengths(2048))
    bound = batching.compile_bound(widths, 32)
    assert bound == (143 if pack else 242)
    assert len(shapes) <= bound
    allowed_rows = set(batching.row_counts(32))
    assert {r for r, _, _ in shapes} <= allowed_rows
    assert {w for _, w, _ in shapes} <= set(widths)


@pytest.mark.parametrize("devices", [1, 2])
def test_pass_tokens_cap_the_slots_of_a_pass(devices):
    """With pass_tokens a pass holds the most rows of row_counts within that many slots
    (at least the smallest count); every text still lands once."""
    assert [batching.pass_rows(w, 32, 512) for w in (64, 128, 256, 384, 2048)] == [8, 4, 2, 1, 1]
    assert batching.pass_rows(2048, 32, 512, devices=2) == 2
    assert batching.pass_rows(256, 32, 512, devices=4) == 8  # 512 slots per device
    assert batching.pass_rows(256, 32, None) == 32
    rng = np.random.default_rng(3)
    ids = _random_ids(rng, 150, high=1500)
    for plan in (batching.plan_packed(ids, 32, batching.pack_width_sets(2048), devices=devices,
                                      pass_tokens=512),
                 batching.plan_sorted(ids, 32, batching.row_lengths(2048), devices=devices,
                                      pass_tokens=512)):
        assert sorted(np.concatenate([p.texts for p in plan]).tolist()) == list(range(150))
        for p in plan:
            rows, width = p.arrays["input_ids"].shape
            assert rows <= batching.pass_rows(width, 32, 512, devices=devices)
            assert rows * width <= 512 * devices or rows == devices

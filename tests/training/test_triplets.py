"""Triplet sampling: counts, categories, never the positive as negative, seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest

from training.triplets import TripletSampler, balanced_order

TYPES = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "c1": "C"}
IMAGES = {p: [i * 2, i * 2 + 1] for i, p in enumerate(sorted(TYPES))}  # two images per product


def owner_of(bank_index: int) -> str:
    return sorted(TYPES)[bank_index // 2]


def make(**kw) -> TripletSampler:
    return TripletSampler(["a1", "a2", "b1", "c1"], IMAGES, TYPES, query_index=[100, 101, 102, 103], **kw)


def test_counts_categories_and_no_self_negative():
    trip = make(in_class=10, out_class=2).sample(seed=0)
    # a1, a2: 2 in-class (capped by category size) + 2 out; b1: 1 + 2; c1: 0 + 2
    assert len(trip) == 4 + 4 + 3 + 2
    products = sorted(TYPES)
    for q, p, n, lp, ln, same in zip(trip.query, trip.positive, trip.negative, trip.label_p, trip.label_n, trip.in_class):
        qp = ["a1", "a2", "b1", "c1"][q - 100]
        assert owner_of(p) == qp and products[lp] == qp
        assert owner_of(n) == products[ln] != qp
        assert same == (TYPES[products[ln]] == TYPES[qp])


def test_seeded_and_resampled_per_seed():
    s = make(in_class=1, out_class=1)
    a, b, c = s.sample(1), s.sample(1), s.sample(2)
    assert np.array_equal(a.negative, b.negative) and np.array_equal(a.query, b.query)
    assert not (np.array_equal(a.negative, c.negative) and np.array_equal(a.query, c.query))


def test_cap_on_triplets():
    trip = make(in_class=10, out_class=2, max_triplets=5).sample(0)
    assert len(trip) == 5


def test_unknown_product_is_an_error():
    with pytest.raises(ValueError, match="without images"):
        TripletSampler(["zz"], IMAGES, TYPES)


def test_mix_draws_each_source_by_its_share_and_repeats_a_small_one():
    queries = ["a1", "a2", "b1", "c1", "a3", "b2"]
    sources = ["real", "real", "synthetic", "synthetic", "synthetic", "lifestyle"]
    s = TripletSampler(queries, IMAGES, TYPES, in_class=0, out_class=1, sources=sources,
                       mix={"real": 2, "synthetic": 1, "lifestyle": 0}, queries_per_epoch=9)
    assert s.epoch_counts(0) == {"lifestyle": 0, "real": 6, "synthetic": 3}  # 2 real queries, each 3 times
    picked = s.epoch_queries(np.random.default_rng(0))
    assert sorted(np.bincount(picked[np.isin(picked, [0, 1])])[:2].tolist()) == [3, 3]
    assert len(s.sample(0)) == 9  # one out-of-class negative per query
    with pytest.raises(ValueError, match="only to sources with no queries"):
        TripletSampler(queries[:2], IMAGES, TYPES, sources=sources[:2], mix={"synthetic": 1}).sample(0)


def test_without_a_mix_every_query_is_used_once_in_the_old_order():
    plain, mixed_off = make(in_class=1, out_class=1).sample(3), make(in_class=1, out_class=1, sources=["real"] * 4).sample(3)
    assert np.array_equal(plain.query, mixed_off.query) and np.array_equal(plain.negative, mixed_off.negative)


def test_balanced_batches_hold_p_products_with_k_rows_each():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 40, size=1000)
    order = balanced_order(labels, products=4, per_product=3, rng=rng)
    assert sorted(order.tolist()) == list(range(1000))  # a permutation: nothing lost or repeated
    batches = [labels[order[i : i + 12]] for i in range(0, 12 * (len(order) // 12), 12)]
    balanced = [b for b in batches if sorted(np.bincount(b)[np.bincount(b) > 0].tolist()) == [3, 3, 3, 3]]
    assert len(balanced) >= len(batches) - 3  # all but the leftovers at the end


def test_sampler_orders_triplets_in_balanced_batches():
    queries = ["a1", "a2", "a3", "b1", "b2", "c1"] * 4
    trip = TripletSampler(queries, IMAGES, TYPES, in_class=1, out_class=1, batch_products=3, batch_size=6).sample(0)
    first = trip.label_p[:6]
    assert len(set(first.tolist())) == 3 and sorted(np.bincount(first)[np.bincount(first) > 0].tolist()) == [2, 2, 2]

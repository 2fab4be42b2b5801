"""Triplet sampling: counts, categories, never the positive as negative, seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest

from training.triplets import TripletSampler

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

"""Retrieval metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.metrics import distance_accuracy, euclidean_distances, group_min, rank_of, recall_at_k, recall_curve, true_ranks


def test_true_ranks_with_ties_are_pessimistic():
    dist = np.array([[0.1, 0.5, 0.9], [0.5, 0.5, 0.2], [0.3, 0.3, 0.3]])
    # row0 true col0 nearest -> 1; row1 true col0 ties col1 and col2 is nearer -> 3; row2 all tie -> 3
    assert true_ranks(dist, np.array([0, 0, 2])).tolist() == [1, 3, 3]


def test_recall_at_k_cases():
    ranks = np.array([1, 2, 5, 10])
    assert recall_at_k(ranks, 1) == 0.25
    assert recall_at_k(ranks, 5) == 0.75
    assert recall_at_k(ranks, 1000) == 1.0  # k larger than the catalog
    assert math.isnan(recall_at_k(np.array([]), 5))  # empty query set: no evidence
    with pytest.raises(ValueError):
        recall_at_k(ranks, 0)


def test_true_ranks_validates_shapes():
    with pytest.raises(ValueError):
        true_ranks(np.zeros((2, 3)), np.array([0]))
    with pytest.raises(ValueError):
        true_ranks(np.zeros((1, 3)), np.array([3]))
    assert true_ranks(np.zeros((0, 3)), np.zeros(0, int)).size == 0


def test_euclidean_distances():
    a = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert euclidean_distances(a, a).round(6).tolist() == [[0.0, 5.0], [5.0, 0.0]]


def test_distance_accuracy_hand_computed():
    # Category X: products x1 at (0,0), x2 at (10,0); category Y: y1 (0,10), y2 (10,10); Z has one product.
    ids = ["x1", "x2", "y1", "y2", "z1"]
    types = ["X", "X", "Y", "Y", "Z"]
    prod = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5]], float)
    queries = np.array([[1, 0], [9, 0], [6, 0], [1, 10], [2, 10], [5, 5]], float)
    truth = ["x1", "x2", "x1", "y1", "y2", "z1"]
    acc = distance_accuracy(queries, truth, prod, ids, types)
    # X: rows ok, ok, wrong (6 is nearer x2) -> 2/3 top1, 3/3 top3
    # Y: (1,10) -> y1 ok, (2,10) is nearer y1 than y2 -> 1/2 top1 ; Z skipped (1 product)
    assert acc.per_category["X"] == pytest.approx((2 / 3, 1.0, 3, 2))
    assert acc.per_category["Y"] == pytest.approx((0.5, 1.0, 2, 2))
    assert "Z" not in acc.per_category
    assert acc.top1 == pytest.approx((2 / 3 + 0.5) / 2)
    assert acc.top3 == pytest.approx(1.0)


def test_distance_accuracy_counts_only_products_of_the_queries():
    ids, types = ["a", "b", "c"], ["T", "T", "T"]
    prod = np.array([[0.0], [1.0], [0.4]])
    acc = distance_accuracy(np.array([[0.1], [0.9]]), ["a", "b"], prod, ids, types)
    assert acc.per_category["T"][3] == 2  # c is not among the queries' products
    assert acc.top1 == 1.0


def test_distance_accuracy_empty_and_unknown():
    acc = distance_accuracy(np.zeros((0, 2)), [], np.zeros((1, 2)), ["a"], ["T"])
    assert math.isnan(acc.top1) and acc.per_category == {}
    with pytest.raises(ValueError, match="without an embedding"):
        distance_accuracy(np.zeros((1, 2)), ["q"], np.zeros((1, 2)), ["a"], ["T"])


def test_group_min_takes_each_groups_nearest_column_and_inf_for_empty_groups():
    dist = np.array([[3.0, 1.0, 2.0, 5.0], [0.0, 4.0, 4.0, 1.0]])
    out = group_min(dist, np.array([2, 0, 2, 0]), 4)
    assert out.tolist() == [[1.0, math.inf, 2.0, math.inf], [1.0, math.inf, 0.0, math.inf]]
    assert group_min(np.zeros((0, 2)), np.array([0, 1]), 2).shape == (0, 2)
    with pytest.raises(ValueError):
        group_min(dist, np.array([0, 1, 2, 9]), 4)


def test_rank_of_ties_and_missing_items():
    row = np.array([0.2, 0.5, 0.5, math.inf])
    assert rank_of(row, 0) == 1
    assert rank_of(row, 1) == 3  # ties with column 2, which counts ahead of it
    assert math.isinf(rank_of(row, 3))  # never found


def test_recall_curve_counts_missing_ranks_as_misses_at_every_k():
    ranks = np.array([1.0, 3.0, math.inf, math.inf])
    assert recall_curve(ranks, [1, 3, 10**9]) == {1: 0.25, 3: 0.5, 10**9: 0.5}
    assert math.isnan(recall_curve(np.array([]), [1])[1])


def test_bootstrap_recall_resamples_scenes_and_pairs_differences():
    from engine.metrics import bootstrap_recall

    ranks = np.array([1.0, 1.0, 1.0, 1.0])
    assert bootstrap_recall(ranks, ["a", "a", "b", "b"], [1]) == {1: (1.0, 1.0)}  # no variation, no width
    mixed = np.array([1.0, 50.0, 1.0, 50.0, 1.0, 50.0])
    lo, hi = bootstrap_recall(mixed, ["a", "a", "b", "b", "c", "c"], [1])[1]
    assert lo == hi == 0.5  # every scene holds one hit and one miss: resampling scenes cannot move it
    lo, hi = bootstrap_recall(mixed, ["a", "b", "c", "d", "e", "f"], [1])[1]
    assert lo < 0.5 < hi  # independent pairs: it can
    # paired difference of identical models is exactly zero
    assert bootstrap_recall(mixed, list("abcdef"), [1, 5], other=mixed) == {1: (0.0, 0.0), 5: (0.0, 0.0)}
    assert all(math.isnan(v) for v in bootstrap_recall(np.array([]), [], [1])[1])
    with pytest.raises(ValueError):
        bootstrap_recall(mixed, ["a"], [1])

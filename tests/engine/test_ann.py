"""Brute-force k-NN against a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ann import BruteForceIndex


def test_brute_force_matches_loop():
    rng = np.random.default_rng(0)
    db, q = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(7, 8)).astype(np.float32)
    nn = BruteForceIndex(db, block=3).search(q, 5)
    for i in range(len(q)):
        d = np.sqrt(((db - q[i]) ** 2).sum(1))
        assert nn.indices[i].tolist() == np.argsort(d, kind="stable")[:5].tolist()
        np.testing.assert_allclose(nn.distances[i], np.sort(d)[:5], rtol=1e-5)


def test_k_larger_than_index_and_ties():
    db = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    nn = BruteForceIndex(db).search(np.array([[1.0, 0.0]], np.float32), 10)
    assert nn.indices.tolist() == [[1, 2, 0]]  # k capped at N; ties broken by index
    with pytest.raises(ValueError):
        BruteForceIndex(db).search(np.zeros((1, 3), np.float32), 1)


def clustered(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(50, d)).astype(np.float32)
    db = centers[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, d)).astype(np.float32)
    q = centers[rng.integers(0, 50, 100)] + 0.3 * rng.normal(size=(100, d)).astype(np.float32)
    return db.astype(np.float32), q.astype(np.float32)


def test_scann_recall_against_brute_force():
    from engine.ann import ScannIndex, ScannParams

    db, q = clustered(6000, 32, 1)
    exact = BruteForceIndex(db).search(q, 10)
    approx = ScannIndex(db, ScannParams()).search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx.indices, exact.indices)])
    assert recall >= 0.95
    # Distances are Euclidean, like brute force, for the items both return.
    np.testing.assert_allclose(approx.distances[:, 0], exact.distances[:, 0], rtol=1e-2, atol=1e-2)


def test_build_index_uses_brute_force_for_small_catalogs():
    from engine.ann import ScannIndex, ScannParams, build_index

    db, _ = clustered(300, 8, 2)
    assert isinstance(build_index(db), BruteForceIndex)
    assert isinstance(build_index(db, ScannParams(brute_force_below=100)), ScannIndex)
    p = ScannIndex.derive(1_000_000, ScannParams())
    assert p.leaves == 1000 and p.leaves_to_search == 100 and p.reorder == 250

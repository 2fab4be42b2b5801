"""Brute-force k-NN against a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from engine.index.base import BuildRequest
from engine.index.brute_force import BruteForceIndex


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


def test_the_backend_builds_and_loads_exact_search(tmp_path):
    db = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    index, record = BruteForceIndex.build(None, BuildRequest(db))
    assert isinstance(index, BruteForceIndex) and record is None and index.describe() == {}
    index.save(tmp_path)
    loaded = BruteForceIndex.load(tmp_path, db, index.describe(), model_fingerprint="any")
    assert (loaded.search(db[:3], 4).indices == index.search(db[:3], 4).indices).all()

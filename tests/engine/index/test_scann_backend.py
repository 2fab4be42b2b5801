"""ScaNN against exact search; its untuned build; saved and loaded (also from manifests of older versions)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.index.base import BuildRequest
from engine.index.brute_force import BruteForceIndex
from engine.index.scann_backend import ScannIndex, ScannParams


def clustered(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(50, d)).astype(np.float32)
    db = centers[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, d)).astype(np.float32)
    q = centers[rng.integers(0, 50, 100)] + 0.3 * rng.normal(size=(100, d)).astype(np.float32)
    return db.astype(np.float32), q.astype(np.float32)


def test_scann_recall_against_brute_force():
    db, q = clustered(6000, 32, 1)
    exact = BruteForceIndex(db).search(q, 10)
    approx = ScannIndex(db, ScannParams()).search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx.indices, exact.indices)])
    assert recall >= 0.95
    # Distances are Euclidean, like brute force, for the items both return.
    np.testing.assert_allclose(approx.distances[:, 0], exact.distances[:, 0], rtol=1e-2, atol=1e-2)


def test_the_untuned_build_uses_brute_force_for_small_catalogs():
    db, _ = clustered(300, 8, 2)
    index, record = ScannIndex.build(ScannParams(), BuildRequest(db))
    assert isinstance(index, BruteForceIndex) and record is None
    index, record = ScannIndex.build(ScannParams(brute_force_below=100), BuildRequest(db))
    assert isinstance(index, ScannIndex) and record is None and index.params.leaves == 15  # derived: sqrt(300) -> N // 20
    p = ScannIndex.derive(1_000_000, ScannParams())
    assert p.leaves == 1000 and p.leaves_to_search == 100 and p.reorder == 250


def test_scann_on_unit_vectors_scores_dot_products_but_returns_euclidean_distances(tmp_path):
    db, q = clustered(4000, 32, 3)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ann = ScannIndex(db, ScannParams(leaves=60, leaves_to_search=10, reorder=100))
    assert ann.params.metric == "dot_product" and ann.params.training_sample == 4000
    exact = BruteForceIndex(db).search(q, 10)
    got = ann.search(q, 10)
    same = got.indices[:, 0] == exact.indices[:, 0]
    assert same.mean() > 0.9  # over 100 queries: one query's miss (ScaNN's k-means is not seeded) cannot fail it
    np.testing.assert_allclose(got.distances[same, 0], exact.distances[same, 0], rtol=1e-3, atol=1e-3)
    for i in range(10):  # the single-query path answers as the batched one does
        one = ann.search(q[i : i + 1], 10)
        np.testing.assert_array_equal(one.indices[0], got.indices[i])
        np.testing.assert_allclose(one.distances[0], got.distances[i], rtol=1e-5, atol=1e-5)
    # per-call knobs: searching every leaf with a deep reorder is exact here
    full = ann.search(q, 10, leaves_to_search=60, reorder=1000)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(full.indices, exact.indices)]) > 0.99
    ann.save(tmp_path / "s")
    loaded = ScannIndex.load(tmp_path / "s", db, ann.describe())
    assert loaded.params == ann.params and (loaded.search(q, 10).indices == ann.search(q, 10).indices).all()


def test_scann_on_other_vectors_uses_squared_l2_and_old_manifests_load(tmp_path):
    db, q = clustered(3000, 16, 4)
    ann = ScannIndex(db, ScannParams(leaves=50))
    assert ann.params.metric == "squared_l2"
    ann.save(tmp_path / "s")
    old = {k: v for k, v in ann.describe().items() if k in ("brute_force_below", "leaves", "leaves_to_search", "reorder", "dims_per_block",
                                                             "anisotropic_threshold", "training_sample")}
    loaded = ScannIndex.load(tmp_path / "s", db, old)  # an index saved before the metric was recorded
    assert loaded.params.metric == "squared_l2"
    np.testing.assert_allclose(loaded.search(q, 5).distances, ann.search(q, 5).distances, rtol=1e-5)
    with pytest.raises(ValueError, match="metric"):
        ScannParams(metric="cosine")

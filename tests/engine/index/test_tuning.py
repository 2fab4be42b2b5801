"""The recall-target tuner: settings it chooses reach the target against exact search; reproducible given a seed."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from engine.index.backends import BackendSpec
from engine.index.brute_force import BruteForceIndex
from engine.index.scann_backend import ScannIndex, ScannParams
from engine.index.tuning import (
    Tuning,
    TuningConfig,
    _neighbours_of,
    recall_at_k,
    tune_index,
)
from engine.index.catalog_index import CatalogIndex, Item


def unit_clusters(n: int, d: int, seed: int, n_queries: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 30 centres, within-cluster cosine about 0.65 (like a trained embedder's)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = np.sqrt((1 / 0.65 - 1) / d)

    def draw(m: int) -> np.ndarray:
        v = centres[rng.integers(0, 30, m)] + rng.normal(scale=sigma, size=(m, d)).astype(np.float32)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    return draw(n), draw(n_queries)


def fake_clock():
    """Every call one second later: all settings look equally fast, so the choice cannot depend on machine load."""
    ticks = itertools.count()
    return lambda: float(next(ticks))


SMALL = TuningConfig(n_queries=200, timing_queries=20, timing_repeats=1, leaves_per_sqrt_n=(2.0, 1.0), budget_s=1e9, allow_exact=False)


def test_recall_at_k_and_leave_one_out_by_hand():
    assert recall_at_k(np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 9], [7, 8, 9]])) == pytest.approx(2 / 6)
    assert recall_at_k(np.array([[1, 2]]), np.array([[2, -1]])) == 1.0  # -1 pads rows with fewer neighbours
    # ties: rows 1 and 2 are the same vector; returning either as the 2nd neighbour is exact
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [5.0, 0.0]], np.float32)
    queries = np.zeros((1, 2), np.float32)
    assert recall_at_k(np.array([[0, 2]]), np.array([[0, 1]])) == 0.5
    assert recall_at_k(np.array([[0, 2]]), np.array([[0, 1]]), queries=queries, vectors=vectors) == 1.0
    assert recall_at_k(np.array([[0, 3]]), np.array([[0, 1]]), queries=queries, vectors=vectors) == 0.5
    got = _neighbours_of(np.array([[7, 3, 5], [3, 7, 5]]), np.array([7, 5]), 2)
    assert got.tolist() == [[3, 5], [3, 7]]


def test_tuned_scann_reaches_the_target_against_exact_search():
    db, q = unit_clusters(6000, 32, 0, 400)
    tuning_q, test_q = q[:200], q[200:]
    index, tuning = tune_index(db, tuning_q, SMALL, ScannParams(brute_force_below=0), clock=fake_clock())
    assert isinstance(index, ScannIndex) and tuning.chosen == "scann"
    assert tuning.recall >= 0.95 and tuning.params["metric"] == "dot_product"
    assert (index.params.leaves_to_search, index.params.reorder) == (tuning.params["leaves_to_search"], tuning.params["reorder"])
    exact = BruteForceIndex(db)
    # the recall the tuner reports is the recall of the returned index, recomputed here from scratch
    got, want = index.search(tuning_q, 10).indices, exact.search(tuning_q, 10).indices
    assert recall_at_k(got, want, queries=tuning_q, vectors=db) == pytest.approx(tuning.recall, abs=1e-4)
    # and it carries over to queries the tuner never saw
    approx, truth = index.search(test_q, 10), exact.search(test_q, 10)
    assert recall_at_k(approx.indices, truth.indices) >= 0.9
    same = approx.indices[:, 0] == truth.indices[:, 0]
    assert same.mean() > 0.9  # and where both found the same nearest item, the same Euclidean distance
    np.testing.assert_allclose(approx.distances[same, 0], truth.distances[same, 0], rtol=1e-3, atol=1e-3)
    # tree sizes first (2 and 1 x sqrt(N)), then the other quantisations on the best size
    sizes, variants = tuning.trees[:2], tuning.trees[2:]
    assert [t["leaves"] for t in sizes] == [150, 80] and all((t["dims_per_block"], t["anisotropic_threshold"]) == (2, 0.2) for t in sizes)
    assert {(t["dims_per_block"], t["anisotropic_threshold"]) for t in variants} == {(2, None), (1, 0.2), (1, None)}
    assert len({t["leaves"] for t in variants}) == 1 and all(t["best"] is None or t["best"]["recall"] >= 0.95 for t in tuning.trees)
    json.dumps(asdict(tuning), allow_nan=False)  # the manifest and /healthz stay strict JSON


def test_sampled_queries_are_seeded_and_leave_themselves_out():
    db, _ = unit_clusters(5000, 32, 1)
    index, tuning = tune_index(db, None, SMALL, ScannParams(brute_force_below=0), clock=fake_clock())
    assert "leave-one-out" in tuning.queries and tuning.n_queries == 200 and tuning.recall >= 0.95
    rows = np.sort(np.random.default_rng(SMALL.seed).choice(len(db), 200, replace=False))  # the seed gives the sample
    got = _neighbours_of(index.search(db[rows], 11, reorder=index.params.reorder + 1).indices, rows, 10)  # as the tuner searched
    want = _neighbours_of(BruteForceIndex(db).search(db[rows], 11).indices, rows, 10)
    assert not (got == rows[:, None]).any() and not (want == rows[:, None]).any()
    assert recall_at_k(got, want, queries=db[rows], vectors=db) == pytest.approx(tuning.recall, abs=1e-4)  # the returned index's


def test_small_catalogs_stay_exact_and_say_why():
    db, q = unit_clusters(800, 16, 2)
    index, tuning = tune_index(db, q, TuningConfig(n_queries=50, timing_queries=10, timing_repeats=1), ScannParams(brute_force_below=1000))
    assert isinstance(index, BruteForceIndex)
    assert tuning.chosen == "brute_force" and "brute_force_below" in tuning.reason and tuning.recall == 1.0 and tuning.exact_qps > 0


def test_an_unreachable_target_falls_back_to_exact_search():
    db, q = unit_clusters(4000, 32, 3)
    cfg = TuningConfig(target_recall=1.0, n_queries=100, timing_queries=10, timing_repeats=1, leaves_per_sqrt_n=(2.0,),
                       leaves_to_search=(1,), reorders=(10,))
    index, tuning = tune_index(db, q, cfg, ScannParams(brute_force_below=0), clock=fake_clock())
    assert isinstance(index, BruteForceIndex) and tuning.chosen == "brute_force" and "no ScaNN setting" in tuning.reason
    assert tuning.trees[0]["best"] is None


def test_a_tuned_index_folder_keeps_its_tuning(tmp_path: Path):
    db, q = unit_clusters(3000, 16, 4)
    items = [Item(f"i{k}", f"p{k}", f"n{k}", "A", f"{k}.jpg") for k in range(len(db))]
    cfg = TuningConfig(n_queries=100, timing_queries=10, timing_repeats=1, leaves_per_sqrt_n=(2.0,), allow_exact=False)
    built = CatalogIndex.from_vectors(db, items, "model-A", BackendSpec("scann", ScannParams(brute_force_below=0)), tuning=cfg, queries=q)
    built.save(tmp_path / "idx")
    loaded = CatalogIndex.load(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["tuning"]["chosen"] == "scann" == loaded.index.kind and loaded.tuning == manifest["tuning"]
    assert manifest["index_params"]["leaves_to_search"] == manifest["tuning"]["params"]["leaves_to_search"]
    assert Tuning(**loaded.tuning).summary().keys() == {k for k in manifest["tuning"] if k != "trees"}
    got = loaded.index.search(q, 10).indices  # the loaded copy, not the original
    assert recall_at_k(got, BruteForceIndex(db).search(q, 10).indices) == pytest.approx(manifest["tuning"]["recall"], abs=0.02)


def test_config_is_validated():
    with pytest.raises(ValueError, match="target_recall"):
        TuningConfig(target_recall=1.5)
    with pytest.raises(ValueError, match="grids"):
        TuningConfig(reorders=())

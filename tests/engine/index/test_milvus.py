"""The Milvus backend on Milvus Lite (embedded, a local .db): recall against exact search on the
loaded copy, and refusal of a collection filled by another model, with other rows, or missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.index.backends import BackendSpec
from engine.index.brute_force import BruteForceIndex
from engine.index.catalog_index import CatalogIndex, IndexFolderError, Item
from engine.index.milvus import MilvusIndex, MilvusIndexError, MilvusSettings, unique_collection


def clustered_unit(n: int, d: int, seed: int, queries: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around 50 centres, and ``queries`` more drawn the same way."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(50, d))
    x = centers[rng.integers(0, 50, n + queries)] + 0.3 * rng.normal(size=(n + queries, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x[:n], x[n:]


def catalog(vectors: np.ndarray, db: Path, collection: str, model: str = "model-A", index_type: str = "FLAT",
            search_params: dict | None = None) -> CatalogIndex:
    items = [Item(f"i{k}", f"p{k}", f"name {k}", "AB"[k % 2], f"img/{k}.jpg") for k in range(len(vectors))]
    return CatalogIndex.from_vectors(vectors, items, model, BackendSpec("milvus", MilvusSettings(str(db), collection, index_type,
                                                                                               search_params=search_params or {})))


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(approx, exact)]))


@pytest.mark.parametrize("index_type,search_params,least", [("FLAT", {}, 0.99), ("HNSW", {"ef": 64}, 0.95)])
def test_recall_at_10_of_the_loaded_copy_against_exact_search(tmp_path: Path, index_type: str, search_params: dict, least: float):
    db, q = clustered_unit(3000, 32, seed=1)
    built = catalog(db, tmp_path / "m.db", "unit", index_type=index_type, search_params=search_params)
    built.save(tmp_path / "idx")
    loaded = CatalogIndex.load(tmp_path / "idx", model_fingerprint="model-A")
    assert isinstance(loaded.index, MilvusIndex) and loaded.index.size == 3000 and loaded.index.dim == 32
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["index_kind"] == "milvus" and manifest["index_params"]["collection"] == "unit"
    assert manifest["index_params"]["uri"] == str((tmp_path / "m.db").resolve()) and manifest["tuning"]["recall"] >= least

    exact = BruteForceIndex(db).search(q, 10)
    got = loaded.index.search(q, 10)
    r = recall(got.indices, exact.indices)
    assert r >= least, f"{index_type}: recall@10 {r:.4f}"
    # Euclidean distances, as the other backends report them, nearest first
    same = got.indices[:, 0] == exact.indices[:, 0]
    np.testing.assert_allclose(got.distances[same, 0], exact.distances[same, 0], rtol=1e-4, atol=1e-4)
    assert (np.diff(got.distances, axis=1) >= -1e-6).all()
    one = loaded.search(q[:1], 5)[0]  # through CatalogIndex, one query as the service asks
    assert [m.item.item_id for m in one] == [f"i{j}" for j in got.indices[0, :5]]


def test_k_above_the_catalog_size_and_bad_queries(tmp_path: Path):
    db, q = clustered_unit(30, 8, seed=2, queries=3)
    index = catalog(db, tmp_path / "m.db", "small").index
    nn = index.search(q, 100)
    assert nn.indices.shape == (3, 30) and sorted(nn.indices[0].tolist()) == list(range(30))
    with pytest.raises(ValueError, match=r"queries must be \(Q, 8\)"):
        index.search(np.zeros((1, 4), np.float32), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(q, 0)


def point_at(folder: Path, collection: str) -> None:
    """Edit an index folder's manifest to name another collection (as a reused name would)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["index_params"]["collection"] = collection
    path.write_text(json.dumps(manifest))


def test_a_collection_filled_by_another_model_is_refused(tmp_path: Path):
    db, _ = clustered_unit(500, 16, seed=3)
    catalog(db, tmp_path / "m.db", "mine", model="model-A").save(tmp_path / "idx")
    catalog(db, tmp_path / "m.db", "theirs", model="model-B")
    point_at(tmp_path / "idx", "theirs")
    with pytest.raises(IndexFolderError, match=r"theirs at .* was filled by model model-B, but this index was built with model model-A.*"
                                                r"rebuild the index with python -m serving.build_index --backend milvus"):
        CatalogIndex.load(tmp_path / "idx", model_fingerprint="model-A")


def test_a_collection_with_other_rows_is_refused(tmp_path: Path):
    db, _ = clustered_unit(500, 16, seed=4)
    catalog(db, tmp_path / "m.db", "full").save(tmp_path / "idx")
    catalog(db[:499], tmp_path / "m.db", "short")
    point_at(tmp_path / "idx", "short")
    with pytest.raises(IndexFolderError, match="short at .* holds 499 rows, but this index has 500 items"):
        CatalogIndex.load(tmp_path / "idx")
    # same model, same count, the items in another order
    items = [Item(f"i{k}", f"p{k}", f"name {k}", "AB"[k % 2], f"img/{k}.jpg") for k in reversed(range(500))]
    CatalogIndex.from_vectors(db, items, "model-A", BackendSpec("milvus", MilvusSettings(str(tmp_path / "m.db"), "reordered")))
    point_at(tmp_path / "idx", "reordered")
    with pytest.raises(IndexFolderError, match="reordered at .* holds other items than this index"):
        CatalogIndex.load(tmp_path / "idx")
    point_at(tmp_path / "idx", "full")
    assert len(CatalogIndex.load(tmp_path / "idx", model_fingerprint="model-A")) == 500


def test_a_missing_collection_names_the_uri_searched_and_the_uri_can_be_overridden(tmp_path: Path, monkeypatch):
    db, _ = clustered_unit(100, 8, seed=5)
    catalog(db, tmp_path / "m.db", "here").save(tmp_path / "idx")
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("SHOWROOM_MILVUS_URI", str(other))
    with pytest.raises(IndexFolderError, match=f"collection here at {other} does not exist"):
        CatalogIndex.load(tmp_path / "idx")
    monkeypatch.delenv("SHOWROOM_MILVUS_URI")
    assert len(CatalogIndex.load(tmp_path / "idx")) == 100


def test_settings_and_names(tmp_path: Path):
    for bad in ("", "1st", "has-dash", "a" * 300):
        with pytest.raises(ValueError, match="collection names"):
            MilvusSettings("x.db", bad)
    with pytest.raises(ValueError, match="Milvus URI"):
        MilvusSettings("")
    a, b = unique_collection("showroom"), unique_collection("showroom")
    assert a != b and MilvusSettings("x.db", a).named("products").collection == f"{a}_products"
    db, _ = clustered_unit(20, 4, seed=6)
    catalog(db, tmp_path / "m.db", "taken")
    with pytest.raises(MilvusIndexError, match="collection taken already exists"):
        catalog(db, tmp_path / "m.db", "taken")


def test_a_delta_over_a_milvus_index_never_changes_its_collection(tmp_path: Path):
    from engine.data.catalog import ProductImage
    from engine.index.delta import CatalogDelta, DeltaError, apply_delta, write_delta_folder
    from engine.index.segments import SegmentedIndex

    db, q = clustered_unit(400, 16, seed=4, queries=20)
    name = unique_collection("shop") + "_products"
    items = [Item(f"p{k}#{k}", f"p{k}", "", "Lamp", f"{k}.jpg") for k in range(400)]
    built = CatalogIndex.from_vectors(db, items, "m", BackendSpec("milvus", MilvusSettings(str(tmp_path / "m.db"), name)))
    built.photo_hashes = [f"{k:064x}" for k in range(400)]
    built.save(tmp_path / "g1")
    photos = {tmp_path / f"n{j}.jpg": v for j, v in enumerate(q)}
    for p in photos:
        p.write_bytes(p.name.encode())
    embed = lambda paths: np.stack([photos[Path(p)] for p in paths])  # noqa: E731
    add = CatalogDelta(add=tuple(ProductImage(f"n{j}", "", "Lamp", tmp_path / f"n{j}.jpg", 2) for j in range(5)), remove=("p0", "p1"))
    write_delta_folder(tmp_path / "g1", tmp_path / "g2", add, embed, model_fingerprint="m")
    g2 = CatalogIndex.load(tmp_path / "g2")  # the base collection, checked as a load checks it, searched past its tombstones
    assert isinstance(g2.index, SegmentedIndex) and isinstance(g2.index.base, MilvusIndex) and len(g2) == 403
    exact = BruteForceIndex(g2.vectors).search(q, 10).indices
    np.testing.assert_array_equal(g2.index.search(q, 10).indices, exact)
    with pytest.raises(DeltaError, match="never changed in place"):
        apply_delta(g2, CatalogDelta(remove=("p2",)), embed)
    report = write_delta_folder(tmp_path / "g2", tmp_path / "g3", CatalogDelta(remove=("p2",)), embed, compact=True)
    g3 = CatalogIndex.load(tmp_path / "g3")
    collection = g3.index.settings.collection
    assert isinstance(g3.index, MilvusIndex) and collection != name and collection.startswith("shop_") and collection.endswith("_products")
    assert len(g3) == 402 and "new Milvus collection" in report.method and report.recall == 1.0
    np.testing.assert_array_equal(g3.index.search(q, 10).indices, BruteForceIndex(g3.vectors).search(q, 10).indices)
    g1 = CatalogIndex.load(tmp_path / "g1")  # the first generation's collection is as it was built
    assert len(g1) == 400 and g1.index.search(db[:1], 1).indices[0, 0] == 0

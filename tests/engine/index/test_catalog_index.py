"""Index folders: save → load → query the loaded copy; refusal of damaged or mismatched indexes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.index.backends import BackendSpec
from engine.index.catalog_index import CatalogIndex, IndexFolderError, Item
from engine.index.scann_backend import ScannParams


def make(n: int = 3000, d: int = 16, seed: int = 0, backend: BackendSpec = BackendSpec()) -> CatalogIndex:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    items = [Item(f"i{k}", f"p{k}", f"name {k}", "AB"[k % 2], f"/img/{k}.jpg") for k in range(n)]
    return CatalogIndex.from_vectors(vectors, items, "model-A", backend)


@pytest.mark.parametrize("backend,kind", [(BackendSpec(), "brute_force"), (BackendSpec("brute_force"), "brute_force"),
                                          (BackendSpec("scann", ScannParams(brute_force_below=100)), "scann")],
                         ids=["scann-small", "brute_force", "scann"])
def test_save_load_and_query_the_loaded_copy(tmp_path: Path, backend: BackendSpec, kind: str):
    original = make(backend=backend)
    original.save(tmp_path / "idx")
    loaded = CatalogIndex.load(tmp_path / "idx", model_fingerprint="model-A")
    assert loaded.index.kind == original.index.kind == kind and len(loaded) == 3000
    q = np.random.default_rng(5).normal(size=(20, 16)).astype(np.float32)
    got = loaded.search(q, 10)
    want = original.search(q, 10)
    assert [[m.item.item_id for m in r] for r in got] == [[m.item.item_id for m in r] for r in want]
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["count"] == 3000 and manifest["dim"] == 16 and manifest["distance"] == "euclidean"
    assert manifest["item_ids"][:2] == ["i0", "i1"] and "vectors.npy" in manifest["checksums"]
    # the vectors are mapped from the verified file, read-only (the workers of one machine share its pages)
    np.testing.assert_array_equal(loaded.vectors, original.vectors)
    assert not loaded.vectors.flags.writeable and isinstance(loaded.vectors.base, np.memmap)
    assert Path(loaded.vectors.base.filename) == (tmp_path / "idx" / "vectors.npy").resolve()
    with pytest.raises(ValueError, match="read-only"):
        loaded.vectors[0, 0] = 1.0


def test_a_loaded_index_keeps_answering_after_its_folder_is_removed(tmp_path: Path):
    """An old generation pruned while a worker still serves it: its mapped vectors stay readable."""
    import shutil

    original = make()
    original.save(tmp_path / "idx")
    loaded = CatalogIndex.load(tmp_path / "idx")
    q = np.random.default_rng(6).normal(size=(5, 16)).astype(np.float32)
    want = [[m.item.item_id for m in r] for r in original.search(q, 5, types={"A"})]
    assert all(len(r) == 5 for r in want)
    shutil.rmtree(tmp_path / "idx")
    assert [[m.item.item_id for m in r] for r in loaded.search(q, 5, types={"A"})] == want  # exact search over the mapped rows
    np.testing.assert_array_equal(loaded.vectors, original.vectors)


def test_type_filter_returns_only_chosen_types(tmp_path: Path):
    idx = make(n=200)
    res = idx.search(np.zeros((2, 16), np.float32), 7, types={"B"})
    assert all(len(r) == 7 and all(m.item.type == "B" for m in r) for r in res)
    assert idx.search(np.zeros((1, 16), np.float32), 5, types={"nope"}) == [[]]


def test_refuses_other_model_and_damage(tmp_path: Path):
    make(n=100).save(tmp_path / "idx")
    with pytest.raises(IndexFolderError, match="built with model model-A.*rebuild it with python -m serving.build_index"):
        CatalogIndex.load(tmp_path / "idx", model_fingerprint="model-B")
    vec = tmp_path / "idx" / "vectors.npy"
    vec.write_bytes(vec.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(IndexFolderError, match="vectors.npy is missing or damaged"):
        CatalogIndex.load(tmp_path / "idx")
    with pytest.raises(IndexFolderError, match="no manifest.json"):
        CatalogIndex.load(tmp_path / "nowhere")


def test_saving_over_an_index_replaces_it_whole(tmp_path: Path):
    make(n=100, seed=1).save(tmp_path / "idx")
    make(n=50, seed=2).save(tmp_path / "idx")
    assert len(CatalogIndex.load(tmp_path / "idx")) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp or old folders left


def test_search_distinct_shows_each_product_and_each_photo_once():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    vectors = np.stack([v[0], v[0], v[1], v[2], v[2] * 0.99 + v[3] * 0.01])  # rows 0 and 1: one photo, two products
    items = [Item("a#0", "a", "A", "T", "a.jpg"), Item("b#0", "b", "B", "T", "b.jpg"), Item("c#0", "c", "C", "T", "c.jpg"),
             Item("d#0", "d", "D", "T", "d0.jpg"), Item("d#1", "d", "D", "T", "d1.jpg")]
    index = CatalogIndex.from_vectors(vectors, items, "fp")
    assert [o.product_id for o in index.same_image(items[0])] == ["b"] and index.same_image(items[2]) == []
    found = [m.item.product_id for m in index.search_distinct(v[0][None], 5)[0]]
    assert found[0] in {"a", "b"} and sorted(found) == sorted(set(found)) and len(found) == 3  # a|b once, c, d once
    assert index.image_number(items[4]) == 1


def test_identical_rows_are_grouped_exactly_even_when_hashes_collide(monkeypatch):
    from engine.index import catalog_index

    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 8)).astype(np.float32)
    v[7] = v[3]
    v[20] = v[3]
    v[11] = v[40]
    groups = catalog_index.identical_rows(v)
    same = {(i, j) for i in range(50) for j in range(50) if i < j and groups[i] == groups[j]}
    assert same == {(3, 7), (3, 20), (7, 20), (11, 40)}

    real_unique = np.unique

    def colliding(a, *args, **kw):  # every row hashes alike: the exact split must find the groups
        if a.dtype == np.uint64 and a.ndim == 1:
            return real_unique(np.zeros_like(a), *args, **kw)
        return real_unique(a, *args, **kw)

    monkeypatch.setattr(catalog_index.np, "unique", colliding)
    again = catalog_index.identical_rows(v)
    assert {(i, j) for i in range(50) for j in range(50) if i < j and again[i] == again[j]} == same


def test_identical_rows_from_given_hashes_and_the_rows_of_each_product():
    from engine.index import catalog_index

    rng = np.random.default_rng(1)
    v = rng.normal(size=(40, 8)).astype(np.float32)
    v[[5, 9, 30]] = v[2]
    v[17] = v[1]
    computed = catalog_index.identical_rows(v)
    hashes = catalog_index.row_hashes(v)
    assert np.array_equal(catalog_index.identical_rows(v, hashes), computed)
    # hashes that all collide (as a segment's could not, but a wrong cache would) still give the exact groups
    zeros = catalog_index.identical_rows(v, np.zeros(40, np.uint64))
    assert all((zeros[i] == zeros[j]) == (computed[i] == computed[j]) for i in range(40) for j in range(40))
    assert sorted(np.unique(computed, return_counts=True)[1].tolist())[-2:] == [2, 4]
    with pytest.raises(ValueError, match="39 row hashes for 40 rows"):
        catalog_index.identical_rows(v, hashes[:39])
    assert catalog_index._rows_by_key(["a", "b", "a", "c", "a", "b"]) == {"a": [0, 2, 4], "b": [1, 5], "c": [3]}
    assert catalog_index._rows_by_key(["x", "y"]) == {"x": [0], "y": [1]} and catalog_index._rows_by_key([]) == {}


def test_an_items_record_is_the_dataclass_record():
    from dataclasses import asdict

    for it in (Item("a#0", "a", "A", "Chair", "a.jpg"),
               Item("s#1", "", "s", "chair", "s.jpg", "s", (1, 2, 3, 4), "chair", "Living room", (("price", "9"), ("url", "u")))):
        assert json.dumps(it.to_dict()) == json.dumps(asdict(it)) and Item.from_dict(json.loads(json.dumps(it.to_dict()))) == it

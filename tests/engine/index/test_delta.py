"""A products index changed in place: added products found, removed ones never returned, unchanged
photos not embedded again, ScaNN mutated with its rows kept in step, bad deltas refused, the
in-room views of a delta's products blended into their vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.data.catalog import ProductImage
from engine.index.brute_force import BruteForceIndex
from engine.index.catalog_index import CatalogIndex, Item
from engine.index.delta import CatalogDelta, DeltaError, ann_recall, apply_delta
from engine.index.scann_backend import ScannIndex, ScannParams
from engine.index.views import ProductView, ProductViews
from tests.engine.index.conftest import ColourEmbed, photo


@pytest.fixture()
def small(tmp_path: Path) -> tuple[CatalogIndex, Path, ColourEmbed]:
    """Three products with one photo each, indexed by exact search."""
    colours = {"red": (250, 10, 10), "green": (10, 250, 10), "blue": (10, 10, 250)}
    embed = ColourEmbed()
    paths = [photo(tmp_path, n, c) for n, c in colours.items()]
    items = [Item(f"{n}#{i}", n, n.title(), "Lamp", p.name) for i, (n, p) in enumerate(zip(colours, paths))]
    vectors = embed(paths)
    embed.paths.clear()
    index = CatalogIndex(vectors, items, BruteForceIndex(vectors), "model-1", catalog_root=str(tmp_path))
    return index, tmp_path, embed


def _row(pid: str, path: Path, name: str = "", type_: str = "Lamp") -> ProductImage:
    return ProductImage(pid, name or pid, type_, path, 2)


def test_an_added_product_is_found_and_a_removed_one_never_returned(small):
    index, root, embed = small
    yellow = photo(root, "yellow", (240, 240, 10))
    updated, report = apply_delta(index, CatalogDelta(add=(_row("yellow", yellow),), remove=("red",)), embed)
    assert sorted(it.product_id for it in updated.items) == ["blue", "green", "yellow"]
    assert embed.paths == [yellow] and (report.embedded, report.reused) == (1, 0)
    (query,) = ColourEmbed()([yellow])
    assert updated.search(query[None], 1)[0][0].item.product_id == "yellow"
    (red,) = ColourEmbed()([root / "red.png"])
    assert "red" not in {m.item.product_id for m in updated.search(red[None], 3)[0]}
    assert len({it.item_id for it in updated.items}) == 3 and updated.photo_hashes is not None and len(updated.photo_hashes) == 3
    assert updated.tuning["updates"][-1]["products_added"] == 1 and index.vectors.shape == (3, 4)  # the old index is untouched


def test_unchanged_photos_are_reused_not_embedded(small):
    index, root, embed = small
    renamed = _row("green", root / "green.png", name="Green lamp, new name")  # same photo, new field
    twin = _row("twin", root / "blue.png")  # a new product photographed with an indexed photo's bytes
    updated, report = apply_delta(index, CatalogDelta(add=(twin,), update=(renamed,)), embed)
    assert embed.paths == [] and (report.embedded, report.reused) == (0, 2)
    by_id = {it.product_id: (it, v) for it, v in zip(updated.items, updated.vectors)}
    assert by_id["green"][0].name == "Green lamp, new name"
    np.testing.assert_array_equal(by_id["twin"][1], index.vectors[2])
    recoloured = photo(root, "green-v2", (10, 120, 10))
    again, report = apply_delta(updated, CatalogDelta(update=(_row("green", recoloured),)), embed)
    assert embed.paths == [recoloured] and report.embedded == 1


def test_deltas_that_do_not_fit_are_refused(small):
    index, root, embed = small
    for delta, message in ((CatalogDelta(), "empty"), (CatalogDelta(add=(_row("red", root / "red.png"),)), "already in the index.*use --update"),
                           (CatalogDelta(update=(_row("nope", root / "red.png"),)), "not in the index"),
                           (CatalogDelta(remove=("nope",)), "not in the index"),
                           (CatalogDelta(update=(_row("red", root / "red.png"),), remove=("red",)), "two of"),
                           (CatalogDelta(remove=("red", "green", "blue")), "removes every product")):
        with pytest.raises(DeltaError, match=message):
            apply_delta(index, delta, embed)
    with pytest.raises(DeltaError, match="another model"):
        apply_delta(index, CatalogDelta(add=(_row("y", photo(root, "y", (1, 2, 3))),)), lambda paths: np.zeros((len(paths), 7), np.float32))
    assert embed.paths == []


def test_scann_is_changed_in_place_with_its_rows_in_step_and_saved(tmp_path: Path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ann = ScannIndex(vectors, ScannParams(brute_force_below=0))
    items = [Item(f"p{i}#{i}", f"p{i}", "", "T", f"p{i}.png") for i in range(len(vectors))]
    index = CatalogIndex(vectors, items, ann, "m")
    index.photo_hashes = [f"h{i}" for i in range(len(vectors))]
    root = tmp_path
    new = [photo(root, f"n{j}", (j * 20, 255 - j * 20, 40)) for j in range(5)]
    gone = tuple(f"p{i}" for i in rng.choice(3000, 30, replace=False))
    embed = ColourEmbed()

    def embed16(paths):
        v = np.repeat(embed(paths), 4, axis=1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    queries = rng.normal(size=(300, 16)).astype(np.float32)
    before, _ = ann_recall(ann, vectors, queries, 10, 300, 0)
    updated, report = apply_delta(index, CatalogDelta(add=tuple(_row(f"n{j}", p) for j, p in enumerate(new)), remove=gone), embed16,
                                  root=root, queries=queries, n_queries=300, target_recall=0.5)
    assert "upserted in place" in report.method and len(updated) == 3000 - 30 + 5
    assert report.recall >= before - 0.02 and report.recall_queries == 300  # the tree and codebooks still fit the vectors
    assert updated.index is ann  # mutated, not rebuilt
    # every row still holds its own item: an exact-distance self search finds it
    nn = updated.index.search(updated.vectors, 1, leaves_to_search=ann.params.leaves)
    assert (nn.indices[:, 0] == np.arange(len(updated))).mean() > 0.99
    assert not {it.product_id for it in updated.items} & set(gone)
    updated.save(tmp_path / "products")
    loaded = CatalogIndex.load(tmp_path / "products", model_fingerprint="m")
    np.testing.assert_array_equal(loaded.vectors, updated.vectors)
    assert loaded.photo_hashes == updated.photo_hashes
    q = updated.vectors[-5:]
    assert [m[0].item.product_id for m in loaded.search(q, 1)] == [f"n{j}" for j in range(5)]


def test_an_index_below_its_recall_target_after_the_change_is_rebuilt(small, tmp_path: Path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2000, 8)).astype(np.float32)
    index = CatalogIndex(vectors, [Item(f"p{i}#{i}", f"p{i}", "", "T", "x.png") for i in range(2000)],
                         ScannIndex(vectors, ScannParams(brute_force_below=0, leaves=40, leaves_to_search=1)), "m")
    index.photo_hashes = [f"h{i}" for i in range(2000)]
    updated, report = apply_delta(index, CatalogDelta(remove=("p1", "p2")), lambda paths: np.zeros((0, 8), np.float32),
                                  target_recall=0.999)
    assert "rebuilt from the vectors" in report.method and updated.index is not index.index and len(updated) == 1998


def _views(pid: str, root: Path, n: int = 2, weight: float = 0.5) -> ProductViews:
    return ProductViews(tuple(ProductView(pid, root / f"{pid}-view{i}.jpg", (0, 0, 4, 4)) for i in range(n)), weight, "views.json", "abc")


class ViewEmbed:
    """Embeds each view as a fixed unit vector and records the views it embeds."""

    def __init__(self, vector=(0.0, 0.0, 0.0, 1.0)) -> None:
        self.vector, self.views = np.asarray(vector, np.float32), []

    def __call__(self, views) -> np.ndarray:
        self.views += list(views)
        return np.tile(self.vector, (len(views), 1))


def test_the_views_of_added_and_updated_products_are_blended_into_their_photos_embedded_afresh(small):
    index, root, embed = small
    yellow = photo(root, "yellow", (240, 240, 10))
    views = ProductViews(_views("yellow", root).views + _views("green", root, 1).views, 0.5, "views.json", "abc")
    embed_views = ViewEmbed()
    delta = CatalogDelta(add=(_row("yellow", yellow), _row("plain", photo(root, "plain", (90, 90, 90)))),
                         update=(_row("green", root / "green.png", name="Green lamp"),), views=views)
    updated, report = apply_delta(index, delta, embed, embed_views=embed_views)
    # green's photo is stored, but as a vector that may already be a blend: embedded again, raw
    assert sorted(embed.paths) == sorted([yellow, root / "plain.png", root / "green.png"]) and report.embedded == 3
    assert embed_views.views == list(views.views) and report.views == views.record()
    raw = dict(zip(["yellow", "plain", "green"], ColourEmbed()([yellow, root / "plain.png", root / "green.png"])))
    got = {it.product_id: v for it, v in zip(updated.items, updated.vectors)}
    for pid in ("yellow", "green"):  # v' = |v| (v + w m) / |v + w m|, m the mean of its views
        blend = raw[pid] + 0.5 * embed_views.vector
        np.testing.assert_allclose(got[pid], blend / np.linalg.norm(blend), atol=1e-6)
    np.testing.assert_allclose(got["plain"], raw["plain"], atol=1e-7)  # no view: its photo alone
    np.testing.assert_array_equal(got["blue"], index.vectors[2])  # the rows the delta does not touch are as they were
    assert updated.tuning["updates"][-1]["views"]["views"] == 3
    assert report.without_views == 0  # the index blends no views: a product without any is as the index's others


def test_views_that_do_not_fit_the_delta_or_the_index_are_refused(small):
    index, root, embed = small
    yellow = _row("yellow", photo(root, "yellow", (240, 240, 10)))
    with pytest.raises(DeltaError, match="neither adds nor updates.*blue"):
        apply_delta(index, CatalogDelta(add=(yellow,), views=_views("blue", root)), embed, embed_views=ViewEmbed())
    with pytest.raises(DeltaError, match="no function to embed them"):
        apply_delta(index, CatalogDelta(add=(yellow,), views=_views("yellow", root)), embed)
    index.embedded_by = {"runner": "local", "views": {"views": 6, "products": 3, "weight": 0.25, "source": "v.json", "sha256": "x"}}
    with pytest.raises(DeltaError, match="blends its products' views at weight 0.25.*--views-weight 0.25"):
        apply_delta(index, CatalogDelta(add=(yellow,), views=_views("yellow", root, weight=0.5)), embed, embed_views=ViewEmbed())
    with pytest.raises(DeltaError, match="another model"):
        apply_delta(index, CatalogDelta(add=(yellow,), views=_views("yellow", root, weight=0.25)), embed,
                    embed_views=lambda views: np.zeros((len(views), 7), np.float32))


def test_in_an_index_that_blends_views_a_vector_is_reused_only_for_its_own_product(small):
    index, root, embed = small
    index.embedded_by = {"views": {"views": 6, "products": 3, "weight": 0.25, "source": "v.json", "sha256": "x"}}
    twin = _row("twin", root / "blue.png")  # blue's photo bytes, but blue's row holds blue's blend, not this product's
    renamed = _row("green", root / "green.png", name="renamed")  # its own row: its own blend, reused
    updated, report = apply_delta(index, CatalogDelta(add=(twin,), update=(renamed,)), embed)
    assert embed.paths == [root / "blue.png"] and (report.embedded, report.reused) == (1, 1)
    got = {it.product_id: v for it, v in zip(updated.items, updated.vectors)}
    np.testing.assert_array_equal(got["green"], index.vectors[1])
    np.testing.assert_allclose(got["twin"], ColourEmbed()([root / "blue.png"])[0], atol=1e-7)  # the photo alone
    # ... and counted: in an index that blends views, a product embedded with none is its photo alone
    assert report.without_views == 1 and updated.tuning["updates"][-1]["without_views"] == 1

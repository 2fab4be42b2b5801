"""Segmented products indexes: a sealed base searched past its tombstones plus exact delta rows answer
as exact search over the live rows does; a delta folder hard-links the base and writes only what
changed; successive deltas, reuse of indexed photos, compaction, and damaged or foreign folders."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.data.catalog import ProductImage
from engine.index.backends import BackendSpec
from engine.index.brute_force import BruteForceIndex
from engine.index import catalog_index
from engine.index.catalog_index import CatalogIndex, IndexFolderError, Item, identical_rows
from engine.index.delta import CatalogDelta, DeltaError, apply_delta, write_delta_folder
from engine.index.scann_backend import ScannIndex, ScannParams
from tests.engine.index.conftest import ColourEmbed, as_version_1, photo
from engine.index.segments import LiveRows, SegmentedIndex, live_base_rows


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _live(base: np.ndarray, removed: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return np.concatenate([np.delete(base, removed, axis=0), delta])


def test_segmented_search_is_exact_search_over_the_live_rows():
    rng = np.random.default_rng(0)
    base, delta = _unit(rng, 300, 8), _unit(rng, 20, 8)
    removed = rng.choice(300, 40, replace=False)
    seg = SegmentedIndex(BruteForceIndex(base), removed, delta)
    live = _live(base, removed, delta)
    queries = _unit(rng, 50, 8)
    got, want = seg.search(queries, 10), BruteForceIndex(live).search(queries, 10)
    assert seg.size == 280 and seg.dim == 8
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.distances, want.distances, atol=1e-5)


def test_tombstones_among_the_nearest_are_skipped_by_searching_further():
    rng = np.random.default_rng(1)
    base = _unit(rng, 200, 6)
    query = base[:1] + 1e-3
    nearest = BruteForceIndex(base).search(query, 60).indices[0]
    removed = nearest[:50]  # the 50 nearest base rows are gone: the first fetch (k + 8) finds none alive
    seg = SegmentedIndex(BruteForceIndex(base), removed, np.zeros((0, 6), np.float32))
    got = seg.search(query, 5)
    want = BruteForceIndex(_live(base, removed, np.zeros((0, 6), np.float32))).search(query, 5)
    np.testing.assert_array_equal(got.indices, want.indices)
    assert seg.search(query, 500).indices.shape == (1, 150)  # k above the live rows: all of them


def test_a_scann_base_keeps_its_recall_with_tombstones_and_delta_rows():
    rng = np.random.default_rng(2)
    base, delta = _unit(rng, 3000, 16), _unit(rng, 60, 16)
    removed = rng.choice(3000, 60, replace=False)
    seg = SegmentedIndex(ScannIndex(base, ScannParams(brute_force_below=0, leaves=30, leaves_to_search=30)), removed, delta)
    queries = np.concatenate([delta[:20], _unit(rng, 80, 16)])
    got = seg.search(queries, 10).indices
    want = BruteForceIndex(_live(base, removed, delta)).search(queries, 10).indices
    assert np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)]) >= 0.95
    assert (got[:20, 0] == np.arange(2940, 2960)).all()  # a delta row is its own nearest


def test_live_rows_read_as_the_assembled_array_without_copying_the_base():
    rng = np.random.default_rng(3)
    base, delta = _unit(rng, 30, 4), _unit(rng, 5, 4)
    removed = np.array([0, 7, 8, 29])
    rows = LiveRows(base, live_base_rows(30, removed), delta)
    want = _live(base, removed, delta)
    assert rows.shape == want.shape == (31, 4) and len(rows) == 31 and rows.dtype == np.float32
    assert rows.base is base  # the base's own array, held, not copied
    np.testing.assert_array_equal(np.asarray(rows), want)
    for key in (0, 25, 26, 30, -1, -31, slice(None), slice(3, 28), slice(None, None, -4), slice(40, 50),
                [30, 0, 26, 25], np.array([], np.int64), np.array([[1, 2], [27, 28]])):
        np.testing.assert_array_equal(rows[key], want[key], err_msg=str(key))
    np.testing.assert_array_equal(np.stack(list(rows)), want)
    np.testing.assert_array_equal(np.concatenate([rows, want[:2]]), np.concatenate([want, want[:2]]))
    for bad in (31, -32, [3, 31]):
        with pytest.raises(IndexError):
            rows[bad]
    with pytest.raises(TypeError, match="mask"):
        rows[np.ones(31, bool)]
    with pytest.raises(TypeError, match="integer"):
        rows[np.array([1.7])]  # not truncated to row 1
    with pytest.raises(TypeError, match="tuple"):
        rows[0, 1]
    with pytest.raises(ValueError, match="without a copy"):
        np.asarray(rows, copy=False)


def test_segmented_index_refuses_rows_outside_its_base():
    with pytest.raises(ValueError, match="removed rows"):
        SegmentedIndex(BruteForceIndex(np.eye(3, dtype=np.float32)), np.array([3]), np.zeros((0, 3), np.float32))


# --- folders ---------------------------------------------------------------------------------------------


COLOURS = {f"p{i}": (int(25 * i) % 256, int(97 * i) % 256, int(181 * i) % 256) for i in range(40)}


@pytest.fixture()
def folder(tmp_path: Path) -> tuple[Path, Path, ColourEmbed]:
    """A flat products index folder of 40 one-photo products (exact search), with its photos' hashes."""
    root = tmp_path / "catalog"
    root.mkdir()
    embed = ColourEmbed()
    paths = [photo(root, n, c) for n, c in COLOURS.items()]
    items = [Item(f"{n}#{i}", n, n, "Lamp", p.name) for i, (n, p) in enumerate(zip(COLOURS, paths))]
    vectors = embed(paths)
    embed.paths.clear()
    index = CatalogIndex(vectors, items, BruteForceIndex(vectors), "model-1", catalog_root=str(root))
    from engine.files import file_sha256

    index.photo_hashes = [file_sha256(p) for p in paths]
    index.save(tmp_path / "g1")
    return tmp_path, root, embed


def _row(pid: str, path: Path, name: str = "") -> ProductImage:
    return ProductImage(pid, name or pid, "Lamp", path, 2)


def _rows(index: CatalogIndex) -> dict[str, tuple[str, tuple]]:
    return {it.product_id: (it.name, tuple(np.round(v, 6))) for it, v in zip(index.items, index.vectors)}


def test_a_delta_folder_links_the_base_and_answers_as_the_rewritten_index(folder):
    tmp, root, embed = folder
    new = photo(root, "new", (3, 200, 90))
    delta = CatalogDelta(add=(_row("new", new),), remove=("p3", "p7"))
    report = write_delta_folder(tmp / "g1", tmp / "g2", delta, embed, model_fingerprint="model-1")
    manifest = json.loads((tmp / "g2" / "manifest.json").read_text())
    assert manifest["layout"] == "segmented" and manifest["count"] == 39 and report.rows_after == 39
    assert embed.paths == [new] and (report.embedded, report.reused) == (1, 0)
    for rel in ("vectors.npy", "items.json", "photos.json"):  # the base is the same bytes on disk, not a copy
        assert os.stat(tmp / "g2" / "base" / rel).st_ino == os.stat(tmp / "g1" / rel).st_ino
    seg = CatalogIndex.load(tmp / "g2", model_fingerprint="model-1")
    flat, _ = apply_delta(CatalogIndex.load(tmp / "g1"), delta, ColourEmbed())
    assert isinstance(seg.index, SegmentedIndex) and _rows(seg) == _rows(flat)
    assert isinstance(seg.vectors, LiveRows)  # read through to the base, not a second copy of it
    np.testing.assert_array_equal(np.asarray(seg.vectors), flat.vectors)
    assert [m.item.item_id for m in seg.same_image(seg.items[0])] == []
    queries = ColourEmbed()([new, root / "p3.png", root / "p10.png"])
    got = [[m.item.product_id for m in ms] for ms in seg.search(queries, 5)]
    assert got == [[m.item.product_id for m in ms] for ms in flat.search(queries, 5)]
    assert got[0][0] == "new" and "p3" not in got[1] and got[2][0] == "p10"
    assert seg.search(queries[:1], 3, types={"Lamp"})[0][0].item.product_id == "new"


def test_successive_deltas_keep_one_base_and_reuse_indexed_photos(folder):
    tmp, root, embed = folder
    new = photo(root, "new", (3, 200, 90))
    write_delta_folder(tmp / "g1", tmp / "g2", CatalogDelta(add=(_row("new", new),), remove=("p3",)), embed)
    embed.paths.clear()
    # an update with the same photo (a new name), a new product photographed with an indexed photo, a removal of a delta row
    delta = CatalogDelta(add=(_row("twin", root / "p5.png"),), update=(_row("p9", root / "p9.png", name="renamed"),), remove=("new",))
    report = write_delta_folder(tmp / "g2", tmp / "g3", delta, embed)
    assert embed.paths == [] and (report.embedded, report.reused) == (0, 2)
    assert os.stat(tmp / "g3" / "base" / "vectors.npy").st_ino == os.stat(tmp / "g1" / "vectors.npy").st_ino
    g3 = CatalogIndex.load(tmp / "g3")
    rows = _rows(g3)
    assert "new" not in rows and "p3" not in rows and rows["p9"][0] == "renamed" and rows["twin"][1] == rows["p5"][1]
    assert len({it.item_id for it in g3.items}) == len(g3.items) == 40
    assert [u["products_added"] for u in g3.tuning["updates"]] == [1, 1]
    with pytest.raises(DeltaError, match="not in the index"):
        write_delta_folder(tmp / "g3", tmp / "g4", CatalogDelta(remove=("p3",)), embed)  # removed two generations ago


def test_changes_past_the_share_compact_into_a_flat_index(folder):
    tmp, root, embed = folder
    delta = CatalogDelta(remove=tuple(f"p{i}" for i in range(5)))  # 5 of 40 rows: 12.5 %, above the 10 % default
    report = write_delta_folder(tmp / "g1", tmp / "g2", delta, embed)
    manifest = json.loads((tmp / "g2" / "manifest.json").read_text())
    assert manifest["version"] == catalog_index.VERSION and "layout" not in manifest and report.rows_after == 35
    write_delta_folder(tmp / "g1", tmp / "g3", CatalogDelta(remove=("p1",)), embed)
    report = write_delta_folder(tmp / "g3", tmp / "g4", CatalogDelta(remove=("p2",)), embed, compact=True)
    g4 = CatalogIndex.load(tmp / "g4")
    assert isinstance(g4.index, BruteForceIndex) and "p1" not in _rows(g4) and "p2" not in _rows(g4) and len(g4) == 38


def test_a_folder_written_before_items_by_column_takes_deltas_and_compacts_into_the_new_layout(folder):
    tmp, root, embed = folder
    shutil.copytree(tmp / "g1", tmp / "v1")
    as_version_1(tmp / "v1")  # what a deployment upgraded to this release serves
    delta = CatalogDelta(remove=("p3",))
    write_delta_folder(tmp / "g1", tmp / "a", delta, embed)
    write_delta_folder(tmp / "v1", tmp / "b", delta, embed)
    assert json.loads((tmp / "b" / "base" / "manifest.json").read_text())["version"] == 1  # the base hard-linked as it is
    a, b = CatalogIndex.load(tmp / "a"), CatalogIndex.load(tmp / "b")
    assert b.items == a.items and len(b) == 39 and "p3" not in _rows(b)
    write_delta_folder(tmp / "b", tmp / "c", CatalogDelta(remove=("p4",)), embed, compact=True)
    assert json.loads((tmp / "c" / "manifest.json").read_text())["version"] == catalog_index.VERSION == 3
    c = CatalogIndex.load(tmp / "c")
    assert c.items == [it for it in a.items if it.product_id != "p4"] and len(c) == 38


def test_a_damaged_delta_or_another_model_is_refused(folder):
    tmp, root, embed = folder
    write_delta_folder(tmp / "g1", tmp / "g2", CatalogDelta(remove=("p3",)), embed)
    with pytest.raises(IndexFolderError, match="built with model"):
        write_delta_folder(tmp / "g2", tmp / "g3", CatalogDelta(remove=("p4",)), embed, model_fingerprint="model-2")
    with open(tmp / "g2" / "delta" / "items.json", "a") as fh:
        fh.write(" ")
    for call in (lambda: CatalogIndex.load(tmp / "g2"), lambda: write_delta_folder(tmp / "g2", tmp / "g3", CatalogDelta(remove=("p4",)), embed)):
        with pytest.raises(IndexFolderError, match="delta/items.json is missing or damaged"):
            call()
    assert not (tmp / "g3").exists()


def test_a_damaged_base_is_refused_when_loaded(folder):
    tmp, root, embed = folder
    write_delta_folder(tmp / "g1", tmp / "g2", CatalogDelta(remove=("p3",)), embed)
    os.unlink(tmp / "g2" / "base" / "vectors.npy")  # the link only: g1 keeps its file
    np.save(tmp / "g2" / "base" / "vectors.npy", np.zeros((40, 4), np.float32))
    with pytest.raises(IndexFolderError, match="vectors.npy is missing or damaged"):
        CatalogIndex.load(tmp / "g2")
    assert len(CatalogIndex.load(tmp / "g1")) == 40


def test_a_segmented_folder_is_not_saved_as_one_backend(folder):
    tmp, root, embed = folder
    write_delta_folder(tmp / "g1", tmp / "g2", CatalogDelta(remove=("p3",)), embed)
    with pytest.raises(TypeError, match="segmented"):
        CatalogIndex.load(tmp / "g2").save(tmp / "g3")


def test_a_truncated_base_is_refused_by_the_next_delta(folder):
    tmp, root, embed = folder
    write_delta_folder(tmp / "g1", tmp / "g2", CatalogDelta(remove=("p3",)), embed)
    (tmp / "g2" / "base" / "items.json").unlink()  # the link only: g1 keeps its file
    (tmp / "g2" / "base" / "items.json").write_text("[]")
    with pytest.raises(IndexFolderError, match="items.json missing or damaged"):
        write_delta_folder(tmp / "g2", tmp / "g3", CatalogDelta(remove=("p4",)), embed)
    assert not (tmp / "g3").exists()


def test_a_scann_base_compacts_into_one_scann_index_of_the_live_rows(tmp_path: Path):
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 2500, 8)
    root = tmp_path / "catalog"
    root.mkdir()
    items = [Item(f"p{i}#{i}", f"p{i}", "", "Lamp", f"p{i}.png") for i in range(2500)]
    flat = CatalogIndex.from_vectors(vectors, items, "m", BackendSpec("scann", ScannParams(brute_force_below=0, leaves=20, leaves_to_search=20)),
                                     catalog_root=str(root))
    flat.photo_hashes = [f"{i:064x}" for i in range(2500)]
    flat.save(tmp_path / "g1")
    extra = _unit(rng, 30, 8)
    photos = {root / f"n{j}.png": v for j, v in enumerate(extra)}
    for p in photos:
        p.write_bytes(p.name.encode())
    embed = lambda paths: np.stack([photos[Path(p)] for p in paths])  # noqa: E731
    delta = CatalogDelta(add=tuple(ProductImage(f"n{j}", "", "Lamp", root / f"n{j}.png", 2) for j in range(30)), remove=("p0", "p1"))
    write_delta_folder(tmp_path / "g1", tmp_path / "g2", delta, embed)
    seg = CatalogIndex.load(tmp_path / "g2")
    assert isinstance(seg.index, SegmentedIndex) and isinstance(seg.index.base, ScannIndex) and len(seg) == 2528
    report = write_delta_folder(tmp_path / "g2", tmp_path / "g3", CatalogDelta(remove=("p2",)), embed, compact=True, queries=extra)
    g3 = CatalogIndex.load(tmp_path / "g3")
    assert isinstance(g3.index, ScannIndex) and len(g3) == 2527 and report.recall >= 0.95
    assert _rows(g3) == {k: v for k, v in _rows(seg).items() if k != "p2"}
    assert [m.item.product_id for m in g3.search(extra[:1], 1)[0]] == ["n0"]


def test_a_reload_over_the_same_base_reuses_it_from_memory(folder, caplog):
    tmp, root, embed = folder
    new = photo(root, "new", (3, 200, 90))
    write_delta_folder(tmp / "g1", tmp / "g2", CatalogDelta(add=(_row("new", new), _row("twin", root / "p5.png")), remove=("p3",)), embed)
    write_delta_folder(tmp / "g2", tmp / "g3", CatalogDelta(remove=("p4",)), embed)
    g1 = CatalogIndex.load(tmp / "g1")
    with caplog.at_level("INFO", logger="engine.index.catalog_index"):
        g2 = CatalogIndex.load(tmp / "g2", reuse=g1)
        g3 = CatalogIndex.load(tmp / "g3", reuse=g2)
    assert g2.index.base is g1.index and g3.index.base is g1.index
    # one copy of the base's vectors in memory: the live rows index into the very array g1 holds
    assert np.shares_memory(g2.vectors.base, g1.vectors) and np.shares_memory(g3.vectors.base, g1.vectors)
    # the live rows' hashes come from the base's, kept since its load: the same groups as hashing every row
    for loaded in (g2, g3):  # (a delta row, "twin", is the same photo as a base row, p5)
        assert np.array_equal(loaded._image_group, identical_rows(np.asarray(loaded.vectors)))
        assert [it.product_id for it in loaded.same_image(loaded.items_of("twin")[0])] == ["p5"]
    assert not np.shares_memory(CatalogIndex.load(tmp / "g1").vectors, g1.vectors)  # (another load: its own)
    assert caplog.text.count("already loaded: reused") == 2
    fresh = CatalogIndex.load(tmp / "g3")
    assert fresh.index.base is not g1.index and _rows(fresh) == _rows(g3)
    queries = ColourEmbed()([new, root / "p10.png"])
    assert [[m.item.item_id for m in ms] for ms in g3.search(queries, 5)] == [[m.item.item_id for m in ms] for ms in fresh.search(queries, 5)]
    write_delta_folder(tmp / "g3", tmp / "g4", CatalogDelta(remove=("p5",)), embed, compact=True)
    write_delta_folder(tmp / "g4", tmp / "g5", CatalogDelta(remove=("p6",)), embed)  # a segment over the compacted base
    assert CatalogIndex.load(tmp / "g5", reuse=g3).index.base is not g1.index  # another base: read from its folder


def test_the_same_flat_index_is_reused_whole_and_another_is_read(folder):
    tmp, root, embed = folder
    g1 = CatalogIndex.load(tmp / "g1")
    import shutil

    shutil.copytree(tmp / "g1", tmp / "linked", copy_function=os.link)  # a generation carrying it over by hard link
    assert CatalogIndex.load(tmp / "linked", reuse=g1) is g1
    with pytest.raises(IndexFolderError, match="built with model"):
        CatalogIndex.load(tmp / "linked", model_fingerprint="model-2", reuse=g1)
    write_delta_folder(tmp / "g1", tmp / "g2", CatalogDelta(remove=("p3",)), embed)
    assert CatalogIndex.load(tmp / "g2", reuse=g1) is not g1


def test_the_same_segmented_index_is_reused_whole_until_a_file_of_it_changes(folder):
    """A reload that published nothing new (or a generation carrying the segmented index over by hard
    link) costs nothing; a segment file changed since is read, and refused."""
    import shutil

    tmp, root, embed = folder
    write_delta_folder(tmp / "g1", tmp / "g2", CatalogDelta(remove=("p3",)), embed)
    g1 = CatalogIndex.load(tmp / "g1")
    g2 = CatalogIndex.load(tmp / "g2", reuse=g1)
    shutil.copytree(tmp / "g2", tmp / "linked", copy_function=os.link)
    assert CatalogIndex.load(tmp / "g2", reuse=g2) is g2 and CatalogIndex.load(tmp / "linked", reuse=g2) is g2
    assert CatalogIndex.load(tmp / "g2", reuse=g1) is not g2  # g1 is its base, not it: the segment is read
    with pytest.raises(IndexFolderError, match="built with model"):
        CatalogIndex.load(tmp / "g2", model_fingerprint="model-2", reuse=g2)
    shutil.copytree(tmp / "g2", tmp / "copied")  # the same bytes, other files: read and verified again
    assert CatalogIndex.load(tmp / "copied", reuse=g2) is not g2
    with open(tmp / "g2" / "removed.npy", "ab") as fh:  # the tombstones changed after g2 was loaded
        fh.write(b"\0")
    with pytest.raises(IndexFolderError, match="removed.npy is missing or damaged"):
        CatalogIndex.load(tmp / "g2", reuse=g2)


def test_a_file_damaged_since_it_was_loaded_is_read_and_refused_not_reused(folder):
    tmp, root, embed = folder
    g1 = CatalogIndex.load(tmp / "g1")
    write_delta_folder(tmp / "g1", tmp / "g2", CatalogDelta(remove=("p3",)), embed)
    os.truncate(tmp / "g1" / "vectors.npy", 100)  # g2's base is the same file (a hard link)
    for name in ("g1", "g2"):
        with pytest.raises(IndexFolderError, match="vectors.npy is missing or damaged"):
            CatalogIndex.load(tmp / name, reuse=g1)


def test_a_file_rewritten_in_place_at_its_size_is_read_and_refused_not_reused(folder):
    """Reuse asks for the very files that were verified (inode, size, modification time), not only
    their recorded sizes: a same-size rewrite of the base's vectors is caught."""
    import time

    tmp, root, embed = folder
    g1 = CatalogIndex.load(tmp / "g1")
    write_delta_folder(tmp / "g1", tmp / "g2", CatalogDelta(remove=("p3",)), embed)
    time.sleep(0.05)  # past the file clock's tick (a few ms), so the rewrite's modification time differs
    path = tmp / "g1" / "vectors.npy"
    size = path.stat().st_size
    with open(path, "r+b") as f:  # the same file, the same size, other bytes
        f.seek(size - 8)
        f.write(b"\x00" * 8)
    assert path.stat().st_size == size
    for name in ("g1", "g2"):  # g2's base is the same file (a hard link)
        with pytest.raises(IndexFolderError, match="vectors.npy is missing or damaged"):
            CatalogIndex.load(tmp / name, reuse=g1)


def test_a_segmented_delta_blends_its_products_views_as_the_rewritten_index_does(folder):
    from engine.index.views import ProductView, ProductViews

    tmp, root, embed = folder
    new = photo(root, "new", (3, 200, 90))
    views = ProductViews(tuple(ProductView(pid, root / f"{pid}.jpg", (0, 0, 4, 4)) for pid in ("new", "new", "p5")), 0.25, "v.json", "d")

    def embed_views(vs):
        return np.tile(np.asarray([0.0, 1.0, 0.0, 0.0], np.float32), (len(vs), 1))

    delta = CatalogDelta(add=(_row("new", new),), update=(_row("p5", root / "p5.png", name="renamed"),), remove=("p3",), views=views)
    report = write_delta_folder(tmp / "g1", tmp / "g2", delta, embed, embed_views=embed_views)
    manifest = json.loads((tmp / "g2" / "manifest.json").read_text())
    assert manifest["layout"] == "segmented" and manifest["tuning"]["updates"][-1]["views"]["views"] == 3
    assert report.embedded == 2 and set(embed.paths) == {new, root / "p5.png"}  # p5's stored vector is not reused under views
    flat, _ = apply_delta(CatalogIndex.load(tmp / "g1"), delta, ColourEmbed(), embed_views=embed_views)
    assert _rows(CatalogIndex.load(tmp / "g2")) == _rows(flat)
    assert _rows(flat)["p5"][1] != _rows(CatalogIndex.load(tmp / "g1"))["p5"][1]  # moved toward its view
    built = json.loads((tmp / "g1" / "manifest.json").read_text())
    built["embedded_by"] = {"views": {"weight": 0.5}}
    (tmp / "g1" / "manifest.json").write_text(json.dumps(built))
    with pytest.raises(DeltaError, match="at weight 0.5"):
        write_delta_folder(tmp / "g1", tmp / "g3", delta, embed, embed_views=embed_views)


def test_a_segmented_delta_over_an_index_that_blends_views_reuses_only_a_products_own_vector(folder):
    tmp, root, embed = folder
    built = json.loads((tmp / "g1" / "manifest.json").read_text())
    built["embedded_by"] = {"views": {"weight": 0.25}}
    (tmp / "g1" / "manifest.json").write_text(json.dumps(built))
    delta = CatalogDelta(add=(_row("twin", root / "p4.png"),), update=(_row("p6", root / "p6.png", name="renamed"),))
    report = write_delta_folder(tmp / "g1", tmp / "g2", delta, embed)
    assert embed.paths == [root / "p4.png"] and (report.embedded, report.reused) == (1, 1)
    rows = _rows(CatalogIndex.load(tmp / "g2"))
    assert rows["p6"][1] == _rows(CatalogIndex.load(tmp / "g1"))["p6"][1] and rows["p6"][0] == "renamed"
    assert report.without_views == 1  # twin: embedded with no view of its own in an index that blends them
    assert json.loads((tmp / "g2" / "manifest.json").read_text())["tuning"]["updates"][-1]["without_views"] == 1

"""engine.index.items: the item table reads like the list of Items it was made from, and round-trips through JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.files import file_sha256
from engine.index import catalog_index
from engine.index.catalog_index import CatalogIndex, IndexFolderError
from engine.index.items import FIELDS, Item, ItemTable, item_images
from tests.engine.index.conftest import as_version_1

ITEMS = [
    Item("p0#0", "p0", "Chair", "chair", "images/p0.jpg", details=(("color", "red"), ("price", "49.00"))),
    Item("p1#1", "p1", "Sofa", "sofa", "images/p1.jpg"),
    Item("s0#2", "p0", "Chair", "chair", "scenes/s0.jpg", scene="s0", box=(10, 20, 110, 220), label="chair", room_type="living"),
    Item("p2#3", "p2", "Lamp", "lamp", "images/p2.jpg", details=(("url", "https://shop/p2"),)),
]


def test_the_table_reads_like_the_list_it_was_made_from():
    table = ItemTable.from_items(ITEMS)
    assert len(table) == 4 and list(table) == ITEMS and table == ITEMS and ITEMS == table
    assert [table[i] for i in range(4)] == ITEMS and table[-1] == ITEMS[-1] and table[np.int64(2)] == ITEMS[2]
    assert table[2].box == (10, 20, 110, 220) and table[0].details == (("color", "red"), ("price", "49.00"))
    assert table[1].box is None and table[1].details == () and table[1].scene is None
    assert table[1:3] == ITEMS[1:3] and isinstance(table[1:3], ItemTable) and table[::-1] == ITEMS[::-1]
    assert table.take([3, 0, 0]) == [ITEMS[3], ITEMS[0], ITEMS[0]] and table.take(np.array([], np.int64)) == []
    assert table.column("product_id") == ["p0", "p1", "p0", "p2"]
    assert table + ITEMS[:1] == ITEMS + ITEMS[:1] and ITEMS[:1] + table == ITEMS[:1] + ITEMS
    assert isinstance(ITEMS[:1] + table, ItemTable) and table != ITEMS[:3] and table != ITEMS[::-1]
    assert ItemTable.from_items(table) is table and ItemTable.from_items([]) == []
    with pytest.raises(IndexError):
        table[4]
    with pytest.raises(IndexError):
        table.take([4])
    for bad in (1.0, True, "0", (0,)):
        with pytest.raises(TypeError, match="integers or slices"):
            table[bad]
    with pytest.raises(KeyError, match="no item field 'colour'"):
        table.column("colour")


def test_json_round_trip_and_the_records_of_older_indexes():
    table = ItemTable.from_items(ITEMS)
    data = json.loads(json.dumps(table.to_json()))
    assert data["format"] == "showroom.items" and data["count"] == 4 and list(data["columns"]) == list(FIELDS)
    assert ItemTable.from_json(data) == ITEMS
    # items.json before columns: one record per row (Item.to_dict), optional fields possibly absent
    records = json.loads(json.dumps([it.to_dict() for it in ITEMS]))
    del records[1]["details"], records[1]["room_type"]
    assert ItemTable.from_json(records) == ITEMS == [Item.from_dict(r) for r in records]
    assert item_images(data) == item_images(records) == [it.image for it in ITEMS]


@pytest.mark.parametrize("data,words", [
    ({"format": "other", "version": 1, "columns": {}}, "not a showroom.items v1"),
    ({"format": "showroom.items", "version": 1, "columns": {"item_id": []}}, "needs a list for each"),
    ({"format": "showroom.items", "version": 1, "columns": {**{f: ["x"] for f in FIELDS}, "item_id": []}}, "different lengths"),
    ("[]", "not a showroom.items"),
])
def test_a_table_that_is_not_one_is_refused(data, words):
    with pytest.raises(ValueError, match=words):
        ItemTable.from_json(data)


def test_records_without_an_id_are_refused():
    with pytest.raises(KeyError):
        ItemTable.from_records([{"product_id": "p0", "name": "", "type": "t", "image": "x.jpg"}])


def _index(n: int = 300) -> CatalogIndex:
    rng = np.random.default_rng(0)
    items = [Item(f"p{k}#{k}", f"p{k // 2}", f"name {k}", "AB"[k % 2], f"images/{k}.jpg", details=(("price", str(k)),))
             for k in range(n)]
    return CatalogIndex.from_vectors(rng.normal(size=(n, 8)).astype(np.float32), items, "model-A")


def test_a_folder_is_written_by_column_and_an_older_one_still_loads(tmp_path: Path):
    index = _index()
    index.save(tmp_path / "new")
    manifest = json.loads((tmp_path / "new" / "manifest.json").read_text())
    assert manifest["version"] == catalog_index.VERSION == 3
    assert json.loads((tmp_path / "new" / "items.json").read_text())["columns"]["product_id"][:3] == ["p0", "p0", "p1"]
    index.save(tmp_path / "old")
    as_version_1(tmp_path / "old")
    q = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    for name in ("new", "old"):
        loaded = CatalogIndex.load(tmp_path / name, model_fingerprint="model-A")
        assert isinstance(loaded.items, ItemTable) and loaded.items == index.items == list(index.items)
        assert loaded.items_of("p3") == [index.items[6], index.items[7]] and loaded.rows_of("p3") == [6, 7]
        assert loaded.image_number(index.items[7]) == 1 and loaded.types == ["A", "B"]
        assert loaded.search(q, 7, {"B"}) == index.search(q, 7, {"B"})
        assert all(m.item.type == "B" for r in loaded.search(q, 7, {"B"}) for m in r)


def test_a_folder_whose_items_are_not_a_table_is_refused(tmp_path: Path):
    _index().save(tmp_path / "idx")
    (tmp_path / "idx" / "items.json").write_text(json.dumps({"format": "showroom.items", "version": 1, "columns": {}}))
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    manifest["checksums"]["items.json"] = file_sha256(tmp_path / "idx" / "items.json")  # damaged before it was checksummed
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFolderError, match="items.json is not an item table"):
        CatalogIndex.load(tmp_path / "idx")
    manifest["version"] = 2  # a flat folder of the segmented layout's version
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFolderError, match=r"v2 index, expected showroom.index v1 or v3"):
        CatalogIndex.load(tmp_path / "idx")

"""The scenes index's rows: each room's proposed crops, then its 14 fixed windows; only the proposed
crops are the products index's real queries."""

from __future__ import annotations

import numpy as np

from engine.data.proposals import WINDOW, windows
from engine.index.backends import BackendSpec
from engine.index.catalog_index import CatalogIndex, Item
from engine.index.serving_folder import _proposed_crops


def test_the_products_index_is_tuned_on_the_proposed_crops_not_the_windows():
    vectors = np.eye(4, dtype=np.float32)
    items = [Item("s#0", "", "s", "chair", "s.jpg", "s", (0, 0, 5, 5), "chair"),
             Item("s#w0", "", "s", "", "s.jpg", "s", (0, 0, 9, 9), WINDOW),
             Item("t#0", "", "t", "scene", "t.jpg", "t", None, "scene"),
             Item("t#w0", "", "t", "", "t.jpg", "t", (0, 0, 9, 9), WINDOW)]
    scenes = CatalogIndex.from_vectors(vectors, items, "m", BackendSpec("brute_force"))
    np.testing.assert_array_equal(_proposed_crops(scenes), vectors[[0, 2]])
    only_windows = CatalogIndex.from_vectors(vectors[:1], items[1:2], "m", BackendSpec("brute_force"))
    assert _proposed_crops(only_windows) is None and _proposed_crops(None) is None


def test_a_room_has_14_fixed_windows_covering_it():
    boxes = windows(300, 200)
    assert len(boxes) == 14 and boxes[0] == (0, 0, 300, 200)
    assert all(0 <= x1 < x2 <= 300 and 0 <= y1 < y2 <= 200 for x1, y1, x2, y2 in boxes)
    assert max(x2 for _, _, x2, _ in boxes[1:5]) == 300 and max(y2 for _, _, _, y2 in boxes[5:]) == 200

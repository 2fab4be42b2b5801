"""The hub correction on hand-computable vectors: room density, the re-ranking, and the engine's searches with it."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import Preprocessing
from engine.index.backends import BackendSpec
from engine.index.catalog_index import CatalogIndex, Item, Match
from engine.index.hubness import HubCorrection, fetch_size, room_density
from engine.search import SearchEngine


def test_room_density_is_the_mean_distance_to_the_k_nearest_reference_rows():
    vectors = np.array([[0, 0], [10, 0]], np.float32)
    reference = np.array([[1, 0], [2, 0], [10, 1]], np.float32)
    # row 0: distances 1, 2, ~10.05 -> the 2 nearest average 1.5; row 1: 9, 8, 1 -> (1 + 8) / 2
    assert room_density(vectors, reference, 2) == pytest.approx([1.5, 4.5], abs=1e-5)
    assert room_density(vectors, reference, 10) == pytest.approx([(1 + 2 + np.hypot(10, 1)) / 3, (9 + 8 + 1) / 3], abs=1e-5)  # k > R: all
    assert room_density(vectors, reference, 2, chunk=1) == pytest.approx(room_density(vectors, reference, 2))
    with pytest.raises(ValueError, match="reference room crops"):
        room_density(vectors, reference[:0], 2)
    with pytest.raises(ValueError, match="same D"):
        room_density(vectors, np.zeros((3, 3), np.float32), 2)
    with pytest.raises(ValueError, match="k must be positive"):
        room_density(vectors, reference, 0)


def _item(pid: str, n: int = 0) -> Item:
    return Item(f"{pid}/{n}", pid, pid, "Lamp", f"{pid}-{n}.jpg")


def test_a_hub_loses_its_lead_and_a_product_takes_its_lowest_photo():
    # product "hub" has two photos; its density is the lower of theirs
    vectors = np.array([[0, 0], [5, 0], [0, 3]], np.float32)
    reference = np.array([[0, 0.5], [0, -0.5], [5, 0.2]], np.float32)
    hub = HubCorrection.fit(vectors, ["hub", "hub", "apart"], reference, k=1, beta=0.5)
    assert hub.density == pytest.approx({"hub": 0.2, "apart": 2.5}, abs=1e-5)
    near, far = Match(_item("hub"), 1.0), Match(_item("apart"), 1.5)
    # 1.0 - 0.1 = 0.9 against 1.5 - 1.25 = 0.25: the product that stands apart comes first
    assert [m.item.product_id for m in hub.rerank([near, far])] == ["apart", "hub"]
    assert hub.rerank([near, far], k=1)[0].distance == 1.5  # distances are reported as they are
    assert hub.with_beta(0.0).rerank([far, near]) == [near, far]  # beta 0: plain distance order
    assert hub.score(Match(_item("added-since"), 0.7)) == 0.7  # no density known: no correction
    with pytest.raises(ValueError, match="beta"):
        HubCorrection(-1.0, 1, {})
    assert fetch_size(5, 1000) == 45 and fetch_size(50, 1000) == 100 and fetch_size(50, 60) == 60


class MeanColour:
    """Embeds a crop as its mean colour, unit norm (D = 3)."""

    preprocessing = Preprocessing(image_size=32, crop_padding=0.0, min_confidence=0.25, fill_confidence=0.0)
    dim = 3
    name = "mean-colour"
    fingerprint = "mean-colour"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        v = images.reshape(len(images), -1, 3).mean(1).astype(np.float32) + 1.0
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_the_engine_ranks_its_results_with_the_correction():
    # a grey "hub" lies near every room crop; a red product stands apart, a bit farther from the query
    colours = {"hub": (150, 150, 150), "red": (255, 90, 90), "blue": (40, 40, 255)}
    embed = MeanColour()
    vecs = embed(np.stack([np.full((32, 32, 3), c, np.uint8) for c in colours.values()]))
    products = CatalogIndex.from_vectors(vecs, [_item(p) for p in colours], "mean-colour", BackendSpec("brute_force"))
    rooms = embed(np.stack([np.full((32, 32, 3), c, np.uint8) for c in [(140, 150, 150), (150, 140, 150), (150, 150, 140), (240, 80, 80)]]))
    query = np.full((32, 32, 3), (200, 130, 130), np.uint8)
    plain = SearchEngine(embed, products)
    assert [m.item.product_id for m in plain.search(query, None, k=3)][:2] == ["hub", "red"]
    corrected = SearchEngine(embed, products, hubness=HubCorrection.fit(products.vectors, [it.product_id for it in products.items], rooms,
                                                                         k=3, beta=1.0))
    got = corrected.search(query, None, k=3)
    assert got[0].item.product_id == "red" and [m.item.product_id for m in got].index("hub") > 0
    scores = [corrected.hubness.score(m) for m in got]
    assert scores == sorted(scores) and [m.distance for m in got] != sorted(m.distance for m in got)  # by corrected score, not distance
    assert {m.item.product_id for m in got} == set(colours)  # the same products, re-ranked

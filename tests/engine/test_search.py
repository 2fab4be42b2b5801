"""The room's one ranked list: each object's matches merged (in turns, by distance, or in turns weighted
by the detector's confidence), each product once; the engine's warm-up; "where is it used?" among
the crops of the product's group."""

from __future__ import annotations

import numpy as np
import pytest

from engine.index.backends import BackendSpec
from engine.index.catalog_index import CatalogIndex, Item
from engine.model.embedder import Embedder
from engine.search import SearchEngine, room_ranking


def test_after_the_warm_up_no_batch_size_traces_the_embedder_again(saved_embedder):
    """A room call embeds its objects' crops as one batch of any size: the warm-up at load must leave
    nothing for it to trace (on a CPU a trace costs about a second per embedder)."""
    embedder = Embedder.load(saved_embedder)
    vectors = embedder(np.stack([np.full((48, 48, 3), c, np.uint8) for c in (30, 120, 220)]))
    products = CatalogIndex.from_vectors(vectors, [Item(f"p{i}/0", f"p{i}", f"p{i}", "Lamp", f"p{i}.jpg") for i in range(3)],
                                         embedder.fingerprint, BackendSpec("brute_force"))
    engine = SearchEngine(embedder, products)
    engine.warm_up()  # the embedder was just loaded, as by a worker: nothing traced before
    traced = embedder.model.predict_function.experimental_get_tracing_count()
    for n in (5, 24, 1, 13):
        embedder(np.zeros((n, 48, 48, 3), np.uint8))
    assert embedder.model.predict_function.experimental_get_tracing_count() == traced


def test_room_ranking_takes_every_objects_first_match_before_any_second():
    per_object = [["a", "b", "c"], ["d", "a", "e"], ["f"]]
    assert room_ranking(per_object) == ["a", "d", "f", "b", "c", "e"]  # "a" once, at its best place
    assert room_ranking(per_object, k=4) == ["a", "d", "f", "b"]
    assert room_ranking([]) == [] and room_ranking([[], ["x"]]) == ["x"]


def test_room_ranking_by_distance_merges_every_match_nearest_first():
    per_object = [["a", "b", "c"], ["d", "a", "e"], ["f"]]
    distances = [[0.5, 0.6, 1.4], [0.2, 0.3, 0.9], [1.0]]
    # "d" (0.2) before "a" (0.3 as the second object's match, its best place); "f" after every closer match
    assert room_ranking(per_object, distances=distances, order="distance") == ["d", "a", "b", "e", "f", "c"]
    assert room_ranking(per_object, k=2, distances=distances, order="distance") == ["d", "a"]
    # equal distances keep the turns order
    flat = [[1.0] * len(p) for p in per_object]
    assert room_ranking(per_object, distances=flat, order="distance") == room_ranking(per_object)


def test_room_ranking_by_confidence_gives_a_less_sure_object_fewer_places():
    per_object = [["a", "b", "c", "d"], ["e", "f", "g"], ["h", "i"]]
    # places r / confidence: a 1, b 2, c 3, d 4 | e 2, f 4, g 6 | h 4, i 8; ties in the turns order
    # (the earlier turn, then the earlier object): e (a first match) before b, h before f before d
    assert room_ranking(per_object, order="confidence", confidences=[1.0, 0.5, 0.25]) == ["a", "e", "b", "c", "h", "f", "d", "g", "i"]
    assert room_ranking(per_object, k=3, order="confidence", confidences=[1.0, 0.5, 0.25]) == ["a", "e", "b"]
    # a product two objects share keeps its best place
    assert room_ranking([["a", "b"], ["b", "c"]], order="confidence", confidences=[0.2, 1.0]) == ["b", "c", "a"]
    # equal confidences are the turns order
    assert room_ranking(per_object, order="confidence", confidences=[0.7] * 3) == room_ranking(per_object)
    # an object of confidence 0 (a detector run with no floor) comes after every other, in turns
    assert room_ranking(per_object, order="confidence", confidences=[1.0, 0.0, 0.0]) == ["a", "b", "c", "d", "e", "h", "f", "i", "g"]


def test_room_ranking_refuses_an_unknown_order_or_missing_distances():
    with pytest.raises(ValueError, match="room order 'best'"):
        room_ranking([["a"]], order="best")
    with pytest.raises(ValueError, match="needs each match's distance"):
        room_ranking([["a", "b"]], order="distance")
    with pytest.raises(ValueError, match="needs each match's distance"):
        room_ranking([["a", "b"]], distances=[[0.1]], order="distance")
    with pytest.raises(ValueError, match="one detector confidence per object"):
        room_ranking([["a"], ["b"]], order="confidence", confidences=[0.9])
    with pytest.raises(ValueError, match="confidences must be in"):
        room_ranking([["a"], ["b"]], order="confidence", confidences=[0.9, -0.1])


def _unit(*xs: float) -> np.ndarray:
    v = np.array(xs, np.float32)
    return v / np.linalg.norm(v)


def test_where_is_it_used_looks_among_the_crops_of_the_products_group_first():
    """A chair is looked for among the rooms' chairs: a rug crop nearer to its photo does not put its
    room first; rooms with no seating crop come after, to fill k; a product of no group sees every crop."""
    chair, vase = _unit(1, 0, 0), _unit(1, 0, 0.01)  # a vase photo that looks like the chair's
    products = CatalogIndex.from_vectors(np.stack([chair, vase]), [Item("c#0", "c", "Chair", "Chair", "c.jpg"),
                                                                   Item("v#0", "v", "Vase", "Vase", "v.jpg")], "m", BackendSpec("brute_force"))
    crops = [("rug-room", "rug", _unit(1, 0.05, 0)),       # nearest to the chair's photo, but a rug
             ("chair-room", "chair", _unit(1, 0.6, 0)),
             ("far-chair-room", "chair", _unit(1, 1.5, 0)),
             ("plain-room", "", _unit(1, 0.3, 0))]         # a crop of no class
    scenes = CatalogIndex.from_vectors(np.stack([v for *_, v in crops]),
                                       [Item(f"{s}#0", "", s, label, f"{s}.jpg", s, (0, 0, 9, 9), label) for s, label, _ in crops],
                                       "m", BackendSpec("brute_force"))
    engine = SearchEngine(None, products, scenes, label_groups={"chair": "seating", "rug": "rug"},
                          group_types={"seating": frozenset({"Chair"})})
    assert engine.group_of_type("Chair") == "seating" and engine.group_of_type("Vase") == ""
    assert engine.labels_of_group("seating") == {"chair", "Chair"} and engine.labels_of_group("") == frozenset()
    assert [m.item.scene for m in engine.scenes_of("c", k=2)] == ["chair-room", "far-chair-room"]
    assert [m.item.scene for m in engine.scenes_of("c", k=4)] == ["chair-room", "far-chair-room", "rug-room", "plain-room"]
    assert [m.item.scene for m in engine.scenes_of("v", k=4)] == ["rug-room", "plain-room", "chair-room", "far-chair-room"]
    assert engine.scenes_of("nope") == []

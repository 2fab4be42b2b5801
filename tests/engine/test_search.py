"""The room's one ranked list: each object's matches merged (in turns, by distance, or in turns weighted
by the detector's confidence), each product once."""

from __future__ import annotations

import pytest

from engine.search import room_ranking


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

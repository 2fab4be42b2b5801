"""The room's one ranked list: each object's first match, then each object's second, each product once."""

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


def test_room_ranking_refuses_an_unknown_order_or_missing_distances():
    with pytest.raises(ValueError, match="room order 'best'"):
        room_ranking([["a"]], order="best")
    with pytest.raises(ValueError, match="needs each match's distance"):
        room_ranking([["a", "b"]], order="distance")
    with pytest.raises(ValueError, match="needs each match's distance"):
        room_ranking([["a", "b"]], distances=[[0.1]], order="distance")

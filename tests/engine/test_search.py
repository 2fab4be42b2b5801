"""The room's one ranked list: each object's first match, then each object's second, each product once."""

from __future__ import annotations

from engine.search import room_ranking


def test_room_ranking_takes_every_objects_first_match_before_any_second():
    per_object = [["a", "b", "c"], ["d", "a", "e"], ["f"]]
    assert room_ranking(per_object) == ["a", "d", "f", "b", "c", "e"]  # "a" once, at its best place
    assert room_ranking(per_object, k=4) == ["a", "d", "f", "b"]
    assert room_ranking([]) == [] and room_ranking([[], ["x"]]) == ["x"]

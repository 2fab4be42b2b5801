"""Whole-room scores on a hand-computable room: coverage, s2p over all pairs, the room list and its recall."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from evaluation.room import (RoomPair, RoomSpec, crop_groups, paired_room_difference, room_lists, room_pairs, room_summary,
                             scene_distances)

# Four products: two lamps, a rug, a chair. Types map to groups; the COCO detector reaches chairs only.
PRODUCTS = ["lampA", "lampB", "rug", "chair"]
TYPES = {"lampA": "Pendant lamp", "lampB": "Table lamp", "rug": "Rug", "chair": "Chair"}
SPEC = RoomSpec(type_group={"Pendant lamp": "lamp", "Table lamp": "lamp", "Rug": "rug", "Chair": "seating"},
                label_group={"lamp": "lamp", "rug": "rug", "chair": "seating", "seating": "seating"},
                coco_types=frozenset({"Chair"}), ks=(1, 2, 10), room_ks=(1, 2, 3), depth=10)

# Scene s1: a lamp box (0.9) and a chair box (0.5); scene s2: a rug box (0.8) and a box of no group ('person').
CROP_SCENE = ["s1", "s1", "s2", "s2"]
CROP_LABEL = ["lamp", "chair", "rug", "person"]
CONF = [0.9, 0.5, 0.8, 0.95]
# distance of each crop (row) to each product (column)
CROP_PROD = np.array([
    [0.5, 0.2, 0.1, 0.9],   # lamp box: nearest overall is the rug (0.1), among lamps lampB then lampA
    [0.3, 0.8, 0.9, 0.4],   # chair box: nearest overall lampA (0.3), then chair (0.4)
    [0.7, 0.6, 0.2, 0.5],   # rug box
    [0.0, 0.1, 0.2, 0.3],   # person box: no group, never an object of the room
])


def test_crops_take_their_labels_group():
    assert crop_groups(CROP_LABEL, SPEC) == ["lamp", "seating", "rug", ""]
    assert crop_groups(["Rug"], SPEC) == ["rug"]  # a pairs.csv crop is labelled with its product's type


def test_the_room_list_searches_each_object_within_its_group():
    rooms = room_lists(CROP_PROD, CROP_SCENE, crop_groups(CROP_LABEL, SPEC), CONF, PRODUCTS, [TYPES[p] for p in PRODUCTS], SPEC)
    # s1: the lamp box (more confident) ranks lampB, lampA; the chair box only the chair
    assert rooms["s1"] == ["lampB", "chair", "lampA"]
    assert rooms["s2"] == ["rug"]
    # by confidence (the default): an object's r-th match at r / confidence, lampB 1/0.9, chair 1/0.5,
    # lampA 2/0.9; a chair box at 0.3 (1/0.3 = 3.3) falls behind the lamp box's second match; in turns it does not
    unsure = [0.9, 0.3, 0.8, 0.95]
    args = (CROP_PROD, CROP_SCENE, crop_groups(CROP_LABEL, SPEC), unsure, PRODUCTS, [TYPES[p] for p in PRODUCTS])
    assert SPEC.order == "confidence" and room_lists(*args, SPEC)["s1"] == ["lampB", "lampA", "chair"]
    assert room_lists(*args, replace(SPEC, order="turns"))["s1"] == ["lampB", "chair", "lampA"]
    # nearest first instead: lampB 0.2, chair 0.4, lampA 0.5 (the lamp box's) — the same here; with
    # the chair closer than the lamp box's first match the chair leads
    by_distance = replace(SPEC, order="distance")
    assert room_lists(CROP_PROD, CROP_SCENE, crop_groups(CROP_LABEL, SPEC), CONF, PRODUCTS, [TYPES[p] for p in PRODUCTS],
                      by_distance)["s1"] == ["lampB", "chair", "lampA"]
    closer = CROP_PROD.copy()
    closer[1, 3] = 0.1
    assert room_lists(closer, CROP_SCENE, crop_groups(CROP_LABEL, SPEC), CONF, PRODUCTS, [TYPES[p] for p in PRODUCTS],
                      by_distance)["s1"] == ["chair", "lampB", "lampA"]
    assert room_lists(closer, CROP_SCENE, crop_groups(CROP_LABEL, SPEC), CONF, PRODUCTS, [TYPES[p] for p in PRODUCTS],
                      SPEC)["s1"] == ["lampB", "chair", "lampA"]


def test_pair_ranks_coverage_and_recall():
    groups = crop_groups(CROP_LABEL, SPEC)
    rooms = room_lists(CROP_PROD, CROP_SCENE, groups, CONF, PRODUCTS, [TYPES[p] for p in PRODUCTS], SPEC)
    pairs = [("lampA", "Pendant lamp", "s1"), ("chair", "Chair", "s1"), ("rug", "Rug", "s2"), ("lampB", "Table lamp", "s2"),
             ("rug", "Rug", "s1")]
    got = room_pairs(pairs, CROP_PROD, CROP_SCENE, groups, rooms, {p: i for i, p in enumerate(PRODUCTS)}, SPEC)
    # lampA in s1: the lamp box ranks it 3rd over the whole catalog (0.5: behind the rug 0.1 and lampB 0.2)
    assert got[0] == RoomPair("lampA", "s1", "lamp", True, 3.0, 3.0, best_rank=3.0)
    assert got[1] == RoomPair("chair", "s1", "seating", True, 2.0, 2.0, best_rank=2.0)
    assert got[2] == RoomPair("rug", "s2", "rug", True, 1.0, 1.0, best_rank=1.0)
    assert got[3].covered is False and got[3].rank == float("inf") and got[3].room_rank == float("inf")  # no lamp box in s2
    assert got[4].covered is False and got[4].room_rank == float("inf")  # no rug box in s1, and the rug is not in s1's list
    s = room_summary(got, TYPES, SPEC, seen_products=frozenset({"rug"}), objects_per_scene=1.5)
    assert s["pairs"] == 5 and s["coverage"] == pytest.approx(3 / 5)
    assert s["s2p_recall"] == {1: pytest.approx(1 / 5), 2: pytest.approx(2 / 5), 10: pytest.approx(3 / 5)}
    assert s["room_recall"] == {1: pytest.approx(1 / 5), 2: pytest.approx(2 / 5), 3: pytest.approx(3 / 5)}
    assert s["coco_class_pairs"]["pairs"] == 1 and s["coco_class_pairs"]["room_recall"][2] == 1.0
    assert s["seen"]["pairs"] == 2 and s["unseen"]["pairs"] == 3
    assert s["per_group"]["lamp"]["pairs"] == 2 and s["per_group"]["lamp"]["coverage"] == 0.5


def test_a_crop_searched_within_its_group_ranks_only_that_groups_products():
    groups = crop_groups(CROP_LABEL, SPEC)
    types = [TYPES[p] for p in PRODUCTS]
    rooms = room_lists(CROP_PROD, CROP_SCENE, groups, CONF, PRODUCTS, types, SPEC)
    pairs = [("lampA", "Pendant lamp", "s1"), ("chair", "Chair", "s1"), ("rug", "Rug", "s2"), ("lampB", "Table lamp", "s2")]
    got = room_pairs(pairs, CROP_PROD, CROP_SCENE, groups, rooms, {p: i for i, p in enumerate(PRODUCTS)}, SPEC, types)
    # lampA: 3rd over the whole catalog (the rug 0.1 and lampB 0.2 ahead), 2nd among the lamps (lampB ahead)
    assert [(r.rank, r.in_group_rank) for r in got] == [(3.0, 2.0), (2.0, 1.0), (1.0, 1.0), (float("inf"), float("inf"))]
    s = room_summary(got, TYPES, SPEC)
    assert s["s2p_recall"][1] == pytest.approx(1 / 4) and s["s2p_group_recall"][1] == pytest.approx(2 / 4)
    assert s["per_group"]["lamp"]["s2p_group_recall"][10] == pytest.approx(1 / 2)
    assert room_pairs(pairs, CROP_PROD, CROP_SCENE, groups, rooms, {p: i for i, p in enumerate(PRODUCTS)}, SPEC)[0].in_group_rank == float("inf")
    whole = [replace(r, in_group_rank=r.rank) for r in got]
    d = paired_room_difference(got, whole, SPEC)
    assert d["all_pairs"]["s2p_group_recall"][1]["difference"] == pytest.approx(2 / 4 - 1 / 4)


def test_paired_difference_matches_pairs_and_refuses_others():
    a = [RoomPair("p", "s1", "lamp", True, 1.0, 1.0), RoomPair("q", "s2", "rug", True, 5.0, 2.0)]
    b = [RoomPair("q", "s2", "rug", False, float("inf"), 9.0), RoomPair("p", "s1", "lamp", True, 3.0, 1.0)]
    d = paired_room_difference(a, b, SPEC, frozenset({"Chair"}), {"p": "Chair", "q": "Rug"})
    assert d["all_pairs"]["coverage"][1]["difference"] == pytest.approx(0.5)
    assert d["all_pairs"]["s2p_recall"][1]["difference"] == pytest.approx(0.5)  # p: 1 vs 3
    assert d["all_pairs"]["room_recall"][2]["difference"] == pytest.approx(0.5)  # q: 2 vs 9
    assert d["coco_class_pairs"]["s2p_recall"][2]["difference"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same pairs"):
        paired_room_difference(a, b[:1], SPEC)


def test_a_chosen_query_crop_decides_the_rank_and_the_best_crop_stays_a_column():
    # a second lamp box in s1 that matches lampA first (0.05)
    crop_prod = np.vstack([CROP_PROD, [0.05, 0.6, 0.7, 0.8]])
    scenes, labels = CROP_SCENE + ["s1"], CROP_LABEL + ["lamp"]
    groups = crop_groups(labels, SPEC)
    types = [TYPES[p] for p in PRODUCTS]
    rooms = room_lists(crop_prod, scenes, groups, CONF + [0.4], PRODUCTS, types, SPEC)
    cols = {p: i for i, p in enumerate(PRODUCTS)}
    pair = [("lampA", "Pendant lamp", "s1")]
    best = room_pairs(pair, crop_prod, scenes, groups, rooms, cols, SPEC, types)[0]
    assert (best.rank, best.in_group_rank, best.best_rank) == (1.0, 1.0, 1.0)
    first_box = room_pairs(pair, crop_prod, scenes, groups, rooms, cols, SPEC, types, chosen={("lampA", "s1"): 0})[0]
    assert (first_box.rank, first_box.in_group_rank, first_box.best_rank) == (3.0, 2.0, 1.0)
    s = room_summary([first_box], TYPES, SPEC)
    assert s["s2p_recall"][1] == 0.0 and s["s2p_recall_best_box"][1] == 1.0


def test_where_is_it_used_over_the_crops_of_the_products_group():
    # crops: scene 0 has a lamp crop (0.9) and a rug crop (0.1); scene 1 a lamp crop (0.5); scene 2 a rug crop (0.2) only
    prod_crop = np.array([[0.9, 0.1, 0.5, 0.2],    # a lamp
                          [0.9, 0.1, 0.5, 0.2],    # a product of no group: every crop counts
                          [0.9, 0.1, 0.5, 0.2]])   # a sofa: no crop of its group anywhere, every crop counts
    crop_scene, groups = np.array([0, 0, 1, 2]), ["lamp", "rug", "lamp", "rug"]
    every = np.array([0.1, 0.5, 0.2])
    got = scene_distances(prod_crop, crop_scene, 3, groups, ["lamp", "", "sofa"])
    np.testing.assert_allclose(got[1], every)
    np.testing.assert_allclose(got[2], every)
    # the lamp: scene 1 (its lamp crop at 0.5) before scene 0 (0.9); scene 2, with no lamp crop, after both
    assert got[0, 1] == 0.5 and got[0, 0] == 0.9 and got[0, 2] > 0.9
    assert np.argsort(got[0]).tolist() == [1, 0, 2]
    assert got[0, 2] == pytest.approx(0.2 + 0.9 + 1.0)  # its nearest crop, moved past every finite distance
    empty = scene_distances(prod_crop, crop_scene, 4, groups, ["lamp", "", "sofa"])  # a scene with no crop stays unreachable
    assert np.isinf(empty[:, 3]).all()

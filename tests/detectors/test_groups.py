"""The product-groups map: types to groups, left-out types with reasons, COCO classes to groups, the report."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from detectors.category_map import DEFAULT_MAP, GROUPS_MAP, load_category_map, map_for_detector
from detectors.groups import coverage_report, group_counts, main
from engine.data.detection import DetectorError

IKEA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ikea"


@pytest.mark.parametrize("ptype,group", [
    ("Pendant lamp", "lamp"), ("Table lamp", "lamp"), ("LED cabinet lighting", "lamp"), ("Lamp shade", "lamp"),
    ("Rug, flatwoven", "rug"), ("Sheepskin", "rug"), ("Door mat", "rug"),
    ("Cushion cover", "cushion"), ("Chair cushion, outdoor", "cushion"), ("Armchair with cushion", "seating"),
    ("Throw", "textile"), ("Quilt cover and 4 pillowcases", "textile"), ("Bedspread and 2 cushion covers", "textile"),
    ("Curtains, 1 pair", "curtain"), ("Block-out roller blind", "curtain"),
    ("Frame", "frame"), ("Picture ledge", "frame"), ("Bed frame", "bed"), ("Mirror", "mirror"),
    ("Box with lid", "box"), ("Basket", "box"), ("Box with handle", "box"), ("Plant pot", "vase"), ("Vase", "vase"),
    ("Chair", "seating"), ("Junior desk chair", "seating"), ("Desk", "table"), ("Coffee table", "table"),
    ("Three-seat sofa", "sofa"), ("Wardrobe", "cabinet"), ("Door", "cabinet"), ("Chest of 3 drawers", "cabinet"),
    ("Wall shelf", "shelf"), ("Bookcase", "shelf"), ("Open storage", "shelf"),
    ("Oven", "appliance"), ("Kitchen mixer tap", "sink"), ("Soft toy", "toy"), ("Wall clock", "clock"),
    ("Mug", "tableware"), ("Block candle holder", "decor"),
])
def test_types_fall_into_their_group(ptype, group):
    assert load_category_map(GROUPS_MAP).class_for(ptype) == group


@pytest.mark.parametrize("ptype,reason", [
    ("Handle", "hardware"), ("Knob", "hardware"), ("Rail", "hardware"), ("Worktop", "surface"),
    ("Cord set", "accessories"), ("Parasol", "outdoor"), ("Cover", "loose cover"),
])
def test_left_out_types_say_why(ptype, reason):
    m = load_category_map(GROUPS_MAP)
    assert m.class_for(ptype) is None
    assert reason in m.left_out_reason(ptype)


def test_left_out_wins_over_a_word_a_group_shares():
    m = load_category_map(GROUPS_MAP)
    # "table" would put it in the table group, "hook" would not matter: left out is checked first
    assert m.class_for("Ironingboard, table") is None and m.left_out_reason("Ironingboard, table")
    assert m.left_out_reason("Chair") is None  # mapped: no reason
    assert m.left_out_reason("Spaceship") is None  # unknown: not left out, a gap


def test_every_rule_names_a_declared_group(tmp_path: Path):
    bad = tmp_path / "g.yaml"
    bad.write_text("version: 1\ngroups: [lamp]\nrules:\n  - {match: rug, class: rug}\n")
    with pytest.raises(DetectorError, match=r"\['rug'\].*not in its 'groups'"):
        load_category_map(bad)
    bad.write_text("version: 1\ngroups: [lamp]\nleft_out:\n  - {match: hook}\n")
    with pytest.raises(DetectorError, match="needs 'match' and a 'reason'"):
        load_category_map(bad)


def test_coco_classes_map_to_groups():
    m = load_category_map(GROUPS_MAP)
    assert m.from_classes["couch"] == "sofa" and m.from_classes["potted plant"] == "vase"
    assert set(m.from_classes.values()) <= set(m.groups)
    assert len(m.groups) == len(set(m.groups)) >= 20


def test_the_map_follows_the_detector():
    groups = load_category_map(GROUPS_MAP)
    assert map_for_detector(groups.groups).source == str(GROUPS_MAP)
    coco = ["chair", "couch", "bed", "dining table", "potted plant", "vase", "clock", "bowl", "cup", "bench",
            "microwave", "oven", "sink", "refrigerator", "toilet"]
    assert map_for_detector(coco).source == str(DEFAULT_MAP)
    with pytest.raises(DetectorError, match="does not know"):
        map_for_detector(["chair"], GROUPS_MAP)


def test_counts_and_report_on_a_hand_made_catalog():
    m = load_category_map(GROUPS_MAP)
    types = {"a": "Pendant lamp", "b": "Table lamp", "c": "Handle", "d": "Spaceship"}
    cov, counts = group_counts(m, types, ["Pendant lamp", "Pendant lamp", "Table lamp", "Handle", "Spaceship"], ["a", "a", "b", "c", "d"])
    assert cov.mapped == {"Pendant lamp": "lamp", "Table lamp": "lamp"} and list(cov.left_out) == ["Handle"] and cov.unmapped == ["Spaceship"]
    assert counts.types == Counter(lamp=2) and counts.photos == Counter(lamp=3) and counts.pairs == Counter(lamp=3)
    report = coverage_report(m, types, [], ["a", "a", "b", "c", "d"])
    assert "(60.0% of 5 pairs)" in report and "UNMAPPED (1 pairs)" in report and "Spaceship" in report


@pytest.mark.skipif(not IKEA.is_dir(), reason="needs ../shared/data/ikea (the IKEA catalog beside the project)")
def test_every_ikea_type_is_mapped_or_left_out_with_a_reason(capsys):
    with (IKEA / "products.csv").open(newline="") as f:
        types = {r["type"] for r in csv.DictReader(f)}
    cov = load_category_map(GROUPS_MAP).type_coverage(types)
    assert cov.unmapped == []
    assert len(cov.mapped) > 0.85 * len(types)
    assert main(["--catalog", str(IKEA)]) == 0
    out = capsys.readouterr().out
    assert "0 unmapped" in out and "of 1775 pairs" in out


def test_detector_classes_to_groups_and_groups_to_catalog_types():
    m = load_category_map(GROUPS_MAP)
    from detectors.category_map import group_types, label_groups

    assert label_groups(["couch", "person", "vase", "tv"], m) == {"couch": "sofa", "vase": "vase"}
    assert label_groups(["lamp", "rug", "couch"], m) == {"lamp": "lamp", "rug": "rug", "couch": "sofa"}
    assert group_types(m, ["Pendant lamp", "Table lamp", "Rug, flatwoven", "Handle"]) == {
        "lamp": frozenset({"Pendant lamp", "Table lamp"}), "rug": frozenset({"Rug, flatwoven"})}

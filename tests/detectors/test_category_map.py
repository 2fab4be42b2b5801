"""The category map: exact entries, ordered rules with exceptions, unknown classes, coverage."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.data.detection import DetectorError
from detectors.category_map import load_category_map

COCO_FURNITURE = ["chair", "couch", "bed", "dining table", "potted plant", "vase", "clock", "bowl", "cup", "tv",
                  "oven", "sink", "refrigerator", "toilet", "book", "bench", "microwave", "person"]


@pytest.mark.parametrize("ptype,cls", [
    ("Armchair", "chair"), ("Chair", "chair"), ("Swivel chair", "chair"), ("Bar stool", "chair"),
    ("Three-seat sofa", "couch"), ("Two-seat sofa-bed", "couch"), ("Chaise longue", "couch"),
    ("Coffee table", "dining table"), ("Desk", "dining table"), ("Bedside table", "dining table"),
    ("Bed frame", "bed"), ("Bunk bed frame", "bed"),
    ("Plant pot", "potted plant"), ("Vase, set of 3", "vase"), ("Wall clock", "clock"), ("Serving bowl", "bowl"),
    ("Mug", "cup"), ("Microwave oven", "microwave"), ("Oven", "oven"), ("Inset sink, 2 bowls", "sink"),
    ("Bench, outdoor", "bench"),
])
def test_reachable_types(ptype, cls):
    assert load_category_map().class_for(ptype) == cls


@pytest.mark.parametrize("ptype", [
    "Table lamp", "TV bench", "Chair cushion", "Bedspread", "Quilt cover and 4 pillowcases", "Cushion cover",
    "Rug, flatwoven", "Pendant lamp", "Hook with suction cup", "Mattress for extendable bed", "Bench cover",
])
def test_unreachable_types(ptype):
    assert load_category_map().class_for(ptype) is None


def test_exact_entries_win_and_are_case_insensitive():
    m = load_category_map()
    assert m.class_for("table lamp") is None  # a rule would say "dining table"
    assert m.class_for("BEDSIDE TABLE") == "dining table"


def test_classes_are_checked_against_the_detector():
    m = load_category_map()
    m.check_classes(COCO_FURNITURE)
    with pytest.raises(DetectorError, match=r"names class\(es\) \['couch'\]"):
        m.check_classes([c for c in COCO_FURNITURE if c != "couch"])


def test_coverage_reports_unreachable_types():
    reachable, unreachable = load_category_map().coverage(["Chair", "Rug, flatwoven", "Vase"])
    assert reachable == {"Chair": "chair", "Vase": "vase"} and unreachable == ["Rug, flatwoven"]


def test_bad_map_files(tmp_path: Path):
    bad = tmp_path / "m.yaml"
    bad.write_text("rules: []\n")
    with pytest.raises(DetectorError, match="integer 'version'"):
        load_category_map(bad)
    bad.write_text("version: 1\nrules:\n  - {match: '(', class: chair}\n")
    with pytest.raises(DetectorError, match="bad regex"):
        load_category_map(bad)
    with pytest.raises(DetectorError, match="not found"):
        load_category_map(tmp_path / "none.yaml")

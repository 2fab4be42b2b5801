"""Box agreement between two detectors: one-to-one twins of the same class, by IoU."""

from __future__ import annotations

import pytest

from detectors.agreement import Agreement, agreement
from engine.data.detection import box_iou
from engine.data.detection import Detection


def test_box_iou_by_hand():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_twins_are_one_to_one_same_class_and_overlapping():
    ref = [Detection((0, 0, 10, 10), "chair", 0.9), Detection((0, 0, 10, 10), "chair", 0.8), Detection((50, 50, 60, 60), "bed", 0.5)]
    other = [Detection((1, 0, 11, 10), "chair", 0.85), Detection((50, 50, 60, 60), "couch", 0.5), Detection((80, 80, 90, 90), "bed", 0.4)]
    a = agreement(ref, other)
    # The best chair takes the only chair twin; the second chair and the bed (wrong class / no overlap) have none.
    assert a.matched == 1 and a.ious == pytest.approx((90 / 110,)) and a.score_diffs == pytest.approx((0.05,))
    assert (a.unmatched_reference, a.unmatched_other) == (2, 2)
    assert agreement(ref, other, min_iou=0.95).matched == 0


def test_agreements_add_up_and_summarise():
    one = agreement([Detection((0, 0, 10, 10), "a", 0.5)], [Detection((0, 0, 10, 10), "a", 0.4)])
    two = agreement([Detection((0, 0, 10, 10), "a", 0.5)], [])
    total = one + two
    assert total == Agreement((1.0,), (pytest.approx(0.1),), 1, 0)
    assert total.summary().startswith("1 twins, unmatched 1 reference / 0 other; IoU min 1.000")
    assert Agreement().summary() == "no twins; unmatched 0 reference, 0 other"

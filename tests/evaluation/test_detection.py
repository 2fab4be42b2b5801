"""AP per group and the page's box recall on hand-computable boxes."""

from __future__ import annotations

import pytest

from evaluation.detection import Scored, ap_per_group, average_precision, box_recall

TRUTH = {"a": [("lamp", (0, 0, 10, 10)), ("rug", (0, 50, 40, 60))], "b": [("lamp", (0, 0, 10, 10)), ("lamp", (20, 20, 30, 30))]}


def test_average_precision_by_hand():
    dets = [Scored("a", "lamp", (0, 0, 10, 10), 0.9), Scored("b", "lamp", (0, 0, 10, 10), 0.8),
            Scored("b", "lamp", (50, 50, 60, 60), 0.7), Scored("b", "lamp", (20, 20, 30, 30), 0.6),
            Scored("a", "lamp", (1, 1, 10, 10), 0.5)]  # a second box on a's lamp: a false positive
    truth = {"a": [(0, 0, 10, 10)], "b": [(0, 0, 10, 10), (20, 20, 30, 30)]}
    # hits 1 1 0 1 0: recall 1/3 2/3 2/3 1 1, precision 1 1 2/3 3/4 3/5 -> made monotone 1 1 .75 .75 .6
    assert average_precision(dets, truth) == pytest.approx(1 / 3 + 1 / 3 + 1 / 3 * 0.75)
    assert average_precision([], truth) == 0.0
    assert average_precision(dets, {"a": []}) != average_precision(dets, {"a": []})  # no true box: NaN


def test_per_group_and_page_recall():
    dets = [Scored("a", "lamp", (0, 0, 10, 10), 0.9), Scored("a", "rug", (0, 48, 40, 60), 0.4), Scored("b", "rug", (0, 0, 10, 10), 0.9)]
    aps = ap_per_group(dets, TRUTH)
    assert set(aps) == {"lamp", "rug"} and aps["lamp"] == pytest.approx(1 / 3) and aps["rug"] == pytest.approx(0.5)  # the rug box on b (no rug there) ranks first: precision 1/2 at full recall
    assert box_recall(dets, TRUTH) == {"lamp": pytest.approx(1 / 3), "rug": 1.0}  # the rug box on b's lamp is the wrong group

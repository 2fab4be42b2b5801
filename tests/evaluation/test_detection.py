"""AP per group and the page's box recall on hand-computable boxes; hand-drawn boxes proposing a room's crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detectors.category_map import GROUPS_MAP, load_category_map, map_for_detector
from engine.config import Preprocessing
from engine.data.boxes import BoxesFileError
from engine.data.catalog import load_catalog
from evaluation.detection import DrawnBoxes, Scored, ap_per_group, average_precision, box_recall
from evaluation.evaluate import room_spec
from evaluation.protocol import EvalConfig, prepare, score
from tests.evaluation.test_protocol import COLOURS, SCENES, _embed, _write_catalog

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


def _drawn_file(path: Path, scenes: dict, *, skip: str = "", relabel: dict | None = None) -> Path:
    """A showroom.boxes file of the pasted products' boxes of ``scenes`` (test_protocol's rooms), each
    labelled with its product type's group (``relabel``: product -> another label)."""
    groups = load_category_map(GROUPS_MAP)
    boxes = {}
    for i, (name, items) in enumerate(scenes.items()):
        if name == skip:
            continue
        w, h = 200 + i, 200
        boxes[name] = [[(relabel or {}).get(pid) or groups.class_for(COLOURS[pid][0]), x1 / w, y1 / h, x2 / w, y2 / h]
                       for pid, (x1, y1, x2, y2), _, _ in items]
    path.write_text(json.dumps({"format": "showroom.boxes", "version": 1, "boxes": boxes}))
    return path


def test_drawn_boxes_propose_every_product_a_coco_detector_misses(tmp_path: Path):
    catalog = load_catalog(_write_catalog(tmp_path / "cat", with_boxes=False))
    groups = load_category_map(GROUPS_MAP)
    drawn = DrawnBoxes.for_catalog(_drawn_file(tmp_path / "boxes.json", SCENES), catalog, groups.groups)
    image = np.zeros((200, 201, 3), np.uint8)  # s2's photo: its chair and its lamp, in pixels
    s2 = str(next(s.image for s in catalog.scenes if s.scene == "s2"))
    assert [(d.label, d.box, d.confidence) for d in drawn.detect_at(s2, image)] == [("seating", (30, 30, 90, 90), 1.0),
                                                                                    ("lamp", (120, 120, 170, 170), 1.0)]
    with pytest.raises(TypeError, match="detect_at"):
        drawn.detect(image)

    prep = Preprocessing(48, min_confidence=0.25, fill_confidence=0.0)
    inputs = prepare(catalog, prep, detector=drawn, category_map=map_for_detector(drawn.class_names), detect=drawn.detect_at,
                     page_labels=drawn.class_names)
    spec = room_spec(catalog, drawn.class_names, groups, (1, 10))
    result = score(inputs, _embed, EvalConfig(ks=(1, 10), room=spec))
    room = result.summary["room"]
    # every product, the lamp no COCO class reaches and the chair a detector mistook for a table included,
    # has its own box of its group: covered, and found first at it (the "embedding" is its colour)
    assert room["coverage"] == 1.0 and room["s2p_recall"][1] == 1.0
    assert all(r.rank == 1 for r in result.room_pairs)
    assert inputs.detector.startswith("drawn-boxes:")


def test_drawn_boxes_must_cover_every_scene_with_groups(tmp_path: Path):
    catalog = load_catalog(_write_catalog(tmp_path / "cat", with_boxes=False))
    groups = load_category_map(GROUPS_MAP).groups
    with pytest.raises(BoxesFileError, match="no boxes for 1 of the 4 evaluated scenes"):
        DrawnBoxes.for_catalog(_drawn_file(tmp_path / "a.json", SCENES, skip="s3"), catalog, groups)
    with pytest.raises(BoxesFileError, match="not product groups"):
        DrawnBoxes.for_catalog(_drawn_file(tmp_path / "b.json", SCENES, relabel={"C1": "chair"}), catalog, groups)
    whole = DrawnBoxes.for_catalog(_drawn_file(tmp_path / "c.json", SCENES), catalog, groups)
    assert sorted(whole.boxes) == sorted(str(s.image) for s in catalog.scenes)  # keyed by each scene's photo


def test_the_page_column_counts_the_boxes_the_page_keeps():
    from engine.data.detection import Detection
    from engine.data.proposals import MAX_PAGE_BOXES
    from evaluation.detector_boxes import page_offers

    # 30 separate lamps, a near-copy of the first, and a rug below the sure threshold (its group's fill-in)
    lamps = [Detection((40 * i, 0, 40 * i + 30, 30), "lamp", 0.9 - 0.01 * i) for i in range(30)]
    found = lamps + [Detection((1, 0, 31, 30), "lamp", 0.5), Detection((0, 100, 50, 150), "rug", 0.1)]
    offered = page_offers(found, {"lamp", "rug"}, 0.25, 0.05)
    assert len(offered) == MAX_PAGE_BOXES  # what the page draws, not the 31 confident boxes and the fill-in
    assert offered[:MAX_PAGE_BOXES] == lamps[:MAX_PAGE_BOXES]  # sure boxes first, the near-copy dropped
    assert [d.label for d in page_offers(found[:3] + found[-2:], {"lamp", "rug"}, 0.25, 0.05)] == ["lamp", "lamp", "lamp", "rug"]

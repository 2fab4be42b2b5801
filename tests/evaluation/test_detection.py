"""AP per group and the page's box recall on hand-computable boxes; hand-drawn boxes proposing a room's crops."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors.category_map import GROUPS_MAP, load_category_map, map_for_detector
from engine.config import Preprocessing
from engine.data.boxes import BoxesFileError
from engine.data.catalog import load_catalog
from engine.data.detection import Detection
from detectors.drawn import DrawnBoxes
from evaluation.detection import (DetectionRecorder, DetectionsFileError, RecordedDetections, Scored, ap_per_group,
                                  average_precision, box_recall)
from evaluation.evaluate import room_spec
from evaluation.protocol import EvalConfig, prepare, score
from tests.evaluation.test_protocol import COLOURS, SCENES, BoxDetector, _embed, _write_catalog, category_map  # noqa: F401 (fixture)

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


class _Shifted(BoxDetector):
    """The same detector on another runtime: every box moved off its object, every score a little lower."""

    fingerprint = "box-detector:1"

    def detect(self, image: np.ndarray) -> list[Detection]:
        out = []
        for d in super().detect(image):
            x1, y1, x2, y2 = d.box
            dx = 45 if x2 + 45 <= image.shape[1] else -45
            out.append(Detection((x1 + dx, y1, x2 + dx, y2), d.label, d.confidence - 0.05))
        return out


def _record(catalog, detector, prep, cmap, path: Path):
    """Prepare ``catalog`` through a recorder of ``detector``; the inputs, and the record written to ``path``."""
    recorder = DetectionRecorder(lambda p, im: detector.detect(im), detector.fingerprint, detector.class_names, prep.detector_confidence)
    inputs = prepare(catalog, prep, detector=detector, category_map=cmap, detect=recorder.detect)
    path.write_text(json.dumps(recorder.record()))
    return inputs


def test_recorded_detections_reproduce_an_evaluation_another_runtime_would_change(tmp_path: Path, category_map):
    catalog = load_catalog(_write_catalog(tmp_path / "cat", with_boxes=False))
    prep, cfg = Preprocessing(48, min_confidence=0.25, fill_confidence=0.0), EvalConfig(ks=(1, 5))
    first = _record(catalog, BoxDetector(), prep, category_map, tmp_path / "det.json")
    record = json.loads((tmp_path / "det.json").read_text())
    assert len(record["images"]) == 4 and record["detector"] == "box-detector:1" and record["confidence"] == 0.25
    assert sum(map(len, record["images"].values())) == 6  # every detection, the one below the threshold too

    # another runtime's boxes move the crops and the figures...
    moved = score(prepare(catalog, prep, detector=_Shifted(), category_map=category_map), _embed, cfg)
    original = score(first, _embed, cfg)
    assert moved.summary["scene_to_product"]["recall"] != original.summary["scene_to_product"]["recall"]
    # ...the record proposes exactly the first call's boxes again: the same crops, the same ranks
    replay = RecordedDetections.read(tmp_path / "det.json", prep.detector_confidence)
    again = prepare(catalog, prep, detector=replay, category_map=category_map, detect=replay.detect_at)
    assert [(c.scene, c.box, c.label) for c in again.crops] == [(c.scene, c.box, c.label) for c in first.crops]
    assert np.array_equal(again.crop_images, first.crop_images)
    assert score(again, _embed, cfg).summary["scene_to_product"] == original.summary["scene_to_product"]
    assert again.detector == "box-detector:1|replayed>=0.25"
    # a replay may ask for surer boxes (the record is filtered), never for less sure ones than were kept
    s1 = next(s.image for s in catalog.scenes if s.scene == "s1")
    assert [d.label for d in RecordedDetections.read(tmp_path / "det.json", 0.85).detect_at(s1, None)] == ["chair"]
    with pytest.raises(DetectionsFileError, match="kept scores >= 0.25"):
        RecordedDetections.read(tmp_path / "det.json", 0.05)


def test_a_detections_record_that_cannot_be_replayed_is_refused(tmp_path: Path, category_map):
    catalog = load_catalog(_write_catalog(tmp_path / "cat", with_boxes=False))
    prep = Preprocessing(48, min_confidence=0.25, fill_confidence=0.0)
    _record(catalog, BoxDetector(), prep, category_map, tmp_path / "det.json")
    good = json.loads((tmp_path / "det.json").read_text())
    for name, data, message in [
        ("boxes.json", {"format": "showroom.boxes", "version": 1, "boxes": {}}, "is not a detections record"),
        ("v2.json", {**good, "version": 2}, "version 2"),
        ("labels.json", {**good, "class_names": ["chair"]}, "not among its class names"),
        ("broken.json", {**good, "images": {"x": [{"box": [1, 2]}]}}, "malformed"),
    ]:
        (tmp_path / name).write_text(json.dumps(data))
        with pytest.raises(DetectionsFileError, match=message):
            RecordedDetections.read(tmp_path / name)
    (tmp_path / "cut.json").write_text("{")
    with pytest.raises(DetectionsFileError, match="cannot read"):
        RecordedDetections.read(tmp_path / "cut.json")
    # a photo the record never saw (here: s2 drawn again) is refused, never left without boxes
    s2 = next(s.image for s in catalog.scenes if s.scene == "s2")
    cv2.imwrite(str(s2), np.full((200, 201, 3), 90, np.uint8))
    replay = RecordedDetections.read(tmp_path / "det.json")
    with pytest.raises(DetectionsFileError, match="not in the detections record"):
        prepare(catalog, prep, detector=replay, category_map=category_map, detect=replay.detect_at)
    with pytest.raises(TypeError, match="detect_at"):
        replay.detect(np.zeros((4, 4, 3), np.uint8))

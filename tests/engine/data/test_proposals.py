"""The one rule that proposes scene crops, on hand-made detections and a hand-made four-scene catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from engine.config import Preprocessing
from engine.data.catalog import Catalog, Pair, ProductImage, Scene
from engine.data.detection import Detection
from engine.data.proposals import SceneCrop, catalog_proposals, confident, needs_detection, page_boxes, propose_crops, windows

CHAIR, SOFA, LAMP = Detection((0, 0, 10, 10), "chair", 0.9), Detection((5, 5, 20, 20), "sofa", 0.3), Detection((1, 1, 4, 4), "lamp", 0.05)
WEAK_CHAIR, WEAK_SOFA = Detection((30, 30, 40, 40), "chair", 0.2), Detection((8, 8, 30, 30), "sofa", 0.12)


def test_confident_keeps_the_detections_at_the_threshold_most_confident_first():
    dets = [SOFA, CHAIR, LAMP, WEAK_CHAIR]
    assert confident(dets, 0.3) == [CHAIR, SOFA]  # 0.3 itself is kept
    assert confident(dets, 0.95) == []
    assert confident(dets, 0.0) == [CHAIR, SOFA, WEAK_CHAIR, LAMP]


def test_fill_gives_each_missing_class_its_single_best_box_down_to_the_fill_threshold():
    dets = [CHAIR, WEAK_CHAIR, WEAK_SOFA, Detection((0, 0, 9, 9), "sofa", 0.11), LAMP]
    # at 0.5 only CHAIR passes; chair is present, so WEAK_CHAIR is not added; sofa's best (0.12) fills in;
    # the lamp (0.05) is under the fill threshold
    assert confident(dets, 0.5, fill_confidence=0.1) == [CHAIR, WEAK_SOFA]
    assert confident(dets, 0.5, fill_confidence=0.05) == [CHAIR, WEAK_SOFA, LAMP]
    assert confident(dets, 0.5, fill_confidence=0.05, classes={"lamp"}) == [CHAIR, LAMP]  # only the classes of interest
    assert confident(dets, 0.5, fill_confidence=0.0) == [CHAIR]  # 0: no fill


def test_windows_are_overlapping_grids_covering_the_photo():
    # n = 1: the whole photo; n = 2: side = length / (2 - 0.2), step = 0.8 side:
    # width 100 -> side 55.6, spans (0, 56) (44, 100); height 50 -> side 27.8, spans (0, 28) (22, 50)
    assert windows(100, 50, grids=(1, 2)) == [(0, 0, 100, 50),
                                              (0, 0, 56, 28), (44, 0, 100, 28), (0, 22, 56, 50), (44, 22, 100, 50)]
    # n = 3 on 90 px with no overlap: thirds
    assert windows(90, 90, grids=(3,), overlap=0.0) == [(x, y, x + 30, y + 30) for y in (0, 30, 60) for x in (0, 30, 60)]
    assert len(windows(640, 480)) == 1 + 4 + 9


def _pair(scene: str, box=None, product: str = "p1") -> Pair:
    return Pair(product, scene, box, row=2)


def test_a_scene_needs_the_detector_unless_every_pair_has_a_box():
    assert needs_detection([])  # no pairs: search the whole photo
    assert not needs_detection([_pair("s", (0, 0, 5, 5)), _pair("s", (1, 1, 6, 6))])
    assert needs_detection([_pair("s", (0, 0, 5, 5)), _pair("s")])


def test_propose_crops_puts_the_pair_boxes_first_then_the_confident_detections_else_the_whole_scene():
    prep = Preprocessing(min_confidence=0.25, fill_confidence=0.1)
    crops = propose_crops("s", [((1, 2, 3, 4), "Chairs")], [SOFA, WEAK_SOFA, CHAIR, LAMP], prep)
    assert crops == [SceneCrop("s", (1, 2, 3, 4), "Chairs", "pairs.csv"),
                     SceneCrop("s", CHAIR.box, "chair", "detector", 0.9), SceneCrop("s", SOFA.box, "sofa", "detector", 0.3)]
    # no pair box and nothing at 0.25: sofa's best fills in at 0.12, lamp (0.05) does not
    assert propose_crops("s", [], [WEAK_SOFA, LAMP], prep) == [SceneCrop("s", WEAK_SOFA.box, "sofa", "detector", 0.12)]
    assert propose_crops("s", [], [LAMP], prep) == [SceneCrop("s", None, "scene", "scene")]


def _photo(path: Path, width: int, height: int) -> Path:
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(path)
    return path


def test_catalog_proposals_follow_the_rule_per_scene(tmp_path: Path):
    """Four scenes: every pair boxed (no detection), one pair without a box (detection), no pairs
    (detection), unreadable (skipped). The detector is asked only where the rule needs it."""
    product = ProductImage("p1", "Chair", "Chairs", _photo(tmp_path / "p1.png", 40, 40), row=2)
    boxed, unboxed, bare = (Scene(name, _photo(tmp_path / f"{name}.png", 64, 48), "room", (64, 48)) for name in ("boxed", "unboxed", "bare"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    unreadable = Scene("unreadable", broken, "room", (64, 48))
    pairs = (_pair("boxed", (2, 2, 20, 20)), _pair("boxed", (30, 10, 60, 40)), _pair("unboxed", (4, 4, 14, 14)), _pair("unboxed"),
             _pair("unreadable", (1, 1, 9, 9)))
    catalog = Catalog(tmp_path, (product,), (boxed, unboxed, bare, unreadable), pairs, "fingerprint", {"p1": "Chairs"})
    asked: list[str] = []

    def detect(path: Path, image: np.ndarray) -> list[Detection]:
        asked.append(path.stem)
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        return [CHAIR, LAMP]

    out = list(catalog_proposals(catalog, detect, Preprocessing(min_confidence=0.25, fill_confidence=0.0)))
    assert [p.scene.scene for p in out] == ["boxed", "unboxed", "bare", "unreadable"]  # scenes.csv order
    assert asked == ["unboxed", "bare"]
    by = {p.scene.scene: p for p in out}
    assert [c.box for c in by["boxed"].crops] == [(2, 2, 20, 20), (30, 10, 60, 40)] and by["boxed"].detections == ()
    assert [(c.box, c.source) for c in by["unboxed"].crops] == [((4, 4, 14, 14), "pairs.csv"), (CHAIR.box, "detector")]
    assert by["unboxed"].detections == (CHAIR, LAMP)  # all of them, before the confidence filter
    assert [(c.box, c.source) for c in by["bare"].crops] == [(CHAIR.box, "detector")] and by["bare"].pairs == ()
    assert by["unreadable"].image is None and by["unreadable"].crops == () and by["unreadable"].error
    assert len(by["unreadable"].pairs) == 1

    # without a detector a scene with no pairs (or no boxes) is the whole photo
    whole = {p.scene.scene: p.crops for p in catalog_proposals(catalog, None, Preprocessing())}
    assert whole["bare"] == (SceneCrop("bare", None, "scene", "scene"),)
    assert whole["unboxed"] == (SceneCrop("unboxed", (4, 4, 14, 14), "Chairs", "pairs.csv"),)


def test_page_boxes_offer_sure_boxes_first_without_near_copies_and_capped():
    sure_chair = Detection((0, 0, 100, 100), "chair", 0.6)
    copy_of_it = Detection((2, 2, 100, 102), "couch", 0.9)  # IoU > 0.7 with the chair: a copy, whatever its label
    part_of_it = Detection((10, 10, 90, 90), "chair", 0.55)  # a chair lying inside the chair: a copy
    lamp_inside = Detection((10, 10, 40, 40), "lamp", 0.5)  # another label inside the chair: its own object
    weak_rug = Detection((0, 150, 200, 200), "rug", 0.1)  # a fill-in: offered after every sure box
    person = Detection((120, 0, 180, 140), "person", 0.99)  # no product group
    dets = [weak_rug, copy_of_it, person, part_of_it, lamp_inside, sure_chair]
    labels = {"chair", "couch", "lamp", "rug"}
    # sure (>= 0.3) by confidence: the couch (0.9) wins over the chair it copies; the chair part stays, as the chair it
    # lies in was dropped and it is no copy of the couch (IoU 0.65)
    got = page_boxes(dets, 0.3, labels)
    assert got == [copy_of_it, part_of_it, lamp_inside, weak_rug]
    assert page_boxes(got, 0.3, labels) == got  # idempotent: the page may apply it again
    assert page_boxes(dets, 0.3)[0] == person  # without labels every label is offered
    assert page_boxes(dets, 0.3, labels, max_boxes=2) == [copy_of_it, part_of_it]
    # a weak box outranks no sure one, however its confidence compares with theirs
    assert page_boxes([weak_rug, Detection((0, 0, 5, 5), "lamp", 0.3)], 0.3)[0].label == "lamp"
    # with a sure chair and no couch, the part inside the chair is dropped
    assert page_boxes([sure_chair, part_of_it], 0.3) == [sure_chair]

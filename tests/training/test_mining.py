"""Mining with a fake detector: kept crops, drop reasons, crop choice by similarity, cache, manifest."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors.cache import DetectionCache
from detectors.category_map import load_category_map
from engine.data.catalog import load_catalog
from engine.data.detection import Detection, DetectorError
from training.manifest import Manifest, load_manifest, save_manifest
from training.mining import MiningConfig, mine_positives, totals

MAP = """version: 3
exact: {}
rules:
  - {match: "^chair$", class: chair}
  - {match: "^table$", class: dining table}
  - {match: "^vase$", class: vase}
  - {match: "^sofa$", class: couch}
  - {match: "^shelf$", class: book}
"""


class FakeDetector:
    """Returns fixed detections per scene size key; counts calls."""

    class_names = ("chair", "dining table", "vase", "couch", "book", "person")
    fingerprint = "fake:1"

    def __init__(self, by_shape: dict[tuple[int, int], list[Detection]]) -> None:
        self.by_shape = by_shape
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.calls += 1
        return self.by_shape.get(image.shape[:2], [])


def write_catalog(root: Path, products: dict[str, tuple[str, np.ndarray]], scenes: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> Path:
    (root / "img").mkdir(parents=True)
    with open(root / "products.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["product_id", "name", "type", "image"])
        for pid, (ptype, img) in products.items():
            cv2.imwrite(str(root / "img" / f"{pid}.png"), img[..., ::-1])
            w.writerow([pid, pid, ptype, f"img/{pid}.png"])
    with open(root / "scenes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["scene", "image"])
        for name, img in scenes.items():
            cv2.imwrite(str(root / "img" / f"{name}.png"), img[..., ::-1])
            w.writerow([name, f"img/{name}.png"])
    with open(root / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["product_id", "scene"])
        w.writerows(pairs)
    return root


def swatch(color, size=64) -> np.ndarray:
    img = np.full((size, size, 3), 255, np.uint8)
    img[8:56, 16:48] = color
    return img


def pixels(images: np.ndarray) -> np.ndarray:
    """A crude embedding for tests: 8x8 colour thumbnails."""
    return np.stack([cv2.resize(im, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32).ravel() for im in images])


@pytest.fixture()
def synthetic(tmp_path: Path):
    red, blue, green, grey = (220, 20, 20), (20, 20, 220), (20, 200, 20), (128, 128, 128)
    # scene s1 (200x300): red chair at left, blue chair at right, a vase; s2 (240x320): a table, far too small
    s1 = np.full((200, 300, 3), (200, 190, 170), np.uint8)
    s1[40:160, 20:100] = red
    s1[40:160, 180:260] = blue
    s1[150:190, 130:150] = green
    s2 = np.full((240, 320, 3), (200, 190, 170), np.uint8)
    s2[100:104, 100:104] = grey
    products = {"cR": ("chair", swatch(red)), "cB": ("chair", swatch(blue)), "v": ("vase", swatch(green)),
                "t": ("table", swatch(grey)), "lamp": ("lamp", swatch((250, 250, 0))), "s": ("sofa", swatch((90, 0, 90))),
                "room": ("chair", s1.copy())}  # a product photo that is a lifestyle shot
    pairs = [("cR", "s1"), ("cB", "s1"), ("v", "s1"), ("lamp", "s1"), ("s", "s1"), ("t", "s2")]
    root = write_catalog(tmp_path / "cat", products, {"s1": s1, "s2": s2}, pairs)
    det = FakeDetector({
        (200, 300): [Detection((180, 40, 260, 160), "chair", 0.9), Detection((20, 40, 100, 160), "chair", 0.8),
                     Detection((130, 150, 150, 190), "vase", 0.9), Detection((0, 0, 300, 200), "couch", 0.1)],
        (240, 320): [Detection((100, 100, 104, 104), "dining table", 0.95)],
    })
    cmap_path = tmp_path / "map.yaml"
    cmap_path.write_text(MAP)
    return load_catalog(root), det, load_category_map(cmap_path)


def test_mining_keeps_right_crops_and_counts_drops(synthetic, tmp_path: Path):
    catalog, det, cmap = synthetic
    cfg = MiningConfig(min_confidence=0.3, fill_confidence=0.0, min_area=0.01, crop_padding=0.0, in_class_negatives=2, out_class_negatives=1)
    res = mine_positives(catalog, det, cmap, cfg, embed=pixels, image_size=32)
    by_product = {p.product_id: p for p in res.positives if p.source == "detector"}
    # Two chairs in one scene: each product gets the crop that looks like it, not the most confident one.
    assert by_product["cR"].box == (20, 40, 100, 160)
    assert by_product["cB"].box == (180, 40, 260, 160)
    assert by_product["v"].box == (130, 150, 150, 190) and by_product["v"].label == "vase"
    assert res.stats["lamp"] == {"pairs": 1, "unreachable_type": 1}
    assert res.stats["sofa"]["below_confidence"] == 1
    assert res.stats["table"]["too_small"] == 1
    assert totals(res.stats)["kept"] == 3 and totals(res.stats)["pairs"] == 6
    lifestyle = [p for p in res.positives if p.source == "product_lifestyle"]
    assert [p.product_id for p in lifestyle] == ["room"] and res.iconic["products_judged_lifestyle"] == ["img/room.png"]
    for p in res.positives:
        assert p.product_id not in p.negatives and len(p.negatives) == len(p.negative_kinds)
    assert res.samples and res.samples[0][0].shape == (32, 32, 3)
    # The manifest round-trips.
    path = tmp_path / "m.json"
    save_manifest(Manifest(str(catalog.root), catalog.fingerprint, res.positives), path)
    assert load_manifest(path).positives == res.positives


def test_a_missing_class_fills_in_from_below_the_threshold(synthetic):
    catalog, det, cmap = synthetic
    res = mine_positives(catalog, det, cmap, MiningConfig(min_confidence=0.3, fill_confidence=0.05), image_size=32)
    sofa = [p for p in res.positives if p.product_id == "s"]
    assert len(sofa) == 1 and sofa[0].label == "couch" and sofa[0].confidence == 0.1  # no couch at 0.3: its best box
    assert res.stats["sofa"]["kept"] == 1
    res = mine_positives(catalog, det, cmap, MiningConfig(min_confidence=0.3, fill_confidence=0.2), image_size=32)
    assert res.stats["sofa"]["below_confidence"] == 1  # 0.1 is below the fill-in floor too


def test_unknown_class_in_map_stops_mining(synthetic, tmp_path: Path):
    catalog, det, _ = synthetic
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - {match: chair, class: armchair}\n")
    with pytest.raises(DetectorError, match="armchair"):
        mine_positives(catalog, det, load_category_map(bad), MiningConfig())


def test_detections_are_cached_per_image_and_detector(synthetic, tmp_path: Path):
    catalog, det, cmap = synthetic
    cache = DetectionCache(det, tmp_path / "cache")
    mine_positives(catalog, det, cmap, MiningConfig(), cache=cache, image_size=32)
    first = det.calls
    assert first == 2
    again = mine_positives(catalog, det, cmap, MiningConfig(), cache=DetectionCache(det, tmp_path / "cache"), image_size=32)
    assert det.calls == first  # every scene came from the cache
    assert totals(again.stats)["kept"] == 4  # two chairs and the vase at >= 0.25, the sofa filled in at 0.1


def test_unreadable_scene_is_skipped_and_counted(synthetic):
    catalog, det, cmap = synthetic
    catalog.scene("s2").image.write_bytes(b"broken")  # broken after the catalog was validated
    res = mine_positives(catalog, det, cmap, MiningConfig(), image_size=32)
    assert res.stats["table"] == {"pairs": 1, "scene_unreadable": 1}


def _drawn(path: Path, boxes: dict) -> Path:
    import json

    path.write_text(json.dumps({"format": "showroom.boxes", "version": 1, "boxes": boxes}))
    return path


def test_drawn_boxes_mine_the_groups_no_detector_class_reaches(synthetic, tmp_path: Path, caplog):
    """Hand-drawn boxes in the detector's place: the lamp no COCO class maps is mined at its drawn box,
    the two chairs each get the box that looks like them, and a scene drawn nowhere gives nothing."""
    from detectors.category_map import GROUPS_MAP
    from detectors.drawn import DrawnBoxes

    catalog, _, _ = synthetic
    groups = load_category_map(GROUPS_MAP)
    # s1 is 300 x 200: the red chair at x 20-100, the blue one at 180-260, the vase, and a "lamp" (drawn over the wall)
    s1 = [["seating", 180 / 300, 40 / 200, 260 / 300, 160 / 200], ["seating", 20 / 300, 40 / 200, 100 / 300, 160 / 200],
          ["vase", 130 / 300, 150 / 200, 150 / 300, 190 / 200], ["lamp", 120 / 300, 10 / 200, 170 / 300, 60 / 200]]
    drawn = DrawnBoxes.for_catalog([_drawn(tmp_path / "a.json", {"s1": s1})], catalog, groups.groups, every_scene=False)
    assert "have no drawn boxes" in caplog.text  # s2 (the table's scene) is drawn nowhere
    assert drawn.fingerprint.startswith("drawn-boxes:")
    cfg = MiningConfig(min_confidence=0.3, fill_confidence=0.0, min_area=0.01, crop_padding=0.0, in_class_negatives=1, out_class_negatives=1)
    res = mine_positives(catalog, drawn, groups, cfg, embed=pixels, image_size=32, cache=DetectionCache(drawn, tmp_path / "cache"))
    by_product = {p.product_id: p for p in res.positives if p.source == "detector"}
    assert by_product["lamp"].box == (120, 10, 170, 60) and by_product["lamp"].label == "lamp" and by_product["lamp"].confidence == 1.0
    assert by_product["cR"].box == (20, 40, 100, 160) and by_product["cB"].box == (180, 40, 260, 160)
    assert by_product["v"].label == "vase"
    assert "t" not in by_product and res.stats["table"] == {"pairs": 1, "reachable": 1, "no_detection_of_class": 1}
    assert "s" not in by_product and res.stats["sofa"]["no_detection_of_class"] == 1  # no sofa drawn in s1
    assert not any((tmp_path / "cache").rglob("*.json"))  # a drawn box is read, never cached as a detection


def test_drawn_boxes_files_are_one_drawing(synthetic, tmp_path: Path, caplog):
    from detectors.category_map import GROUPS_MAP
    from detectors.drawn import DrawnBoxes
    from engine.data.boxes import BoxesFileError
    from training.mine_triplets import main

    catalog, _, _ = synthetic
    groups = load_category_map(GROUPS_MAP).groups
    a = _drawn(tmp_path / "a.json", {"s1": [["lamp", 0.1, 0.1, 0.2, 0.2]]})
    b = _drawn(tmp_path / "b.json", {"s2": [["table", 0.3, 0.4, 0.34, 0.44]]})
    both = DrawnBoxes.for_catalog([a, b], catalog, groups)  # together they draw every scene with pairs
    assert {len(v) for v in both.boxes.values()} == {1}
    with pytest.raises(BoxesFileError, match="have no boxes for 1 of the 2 evaluated scenes"):
        DrawnBoxes.for_catalog([a], catalog, groups)  # an evaluation needs every scene drawn
    from dataclasses import replace

    no_pairs_in_s2 = replace(catalog, pairs=tuple(p for p in catalog.pairs if p.scene != "s2"), _types=catalog.types)
    with pytest.raises(BoxesFileError, match="have no boxes for 1 of the 2 evaluated scenes"):
        DrawnBoxes.for_catalog([a], no_pairs_in_s2, groups)  # a scene without pairs still holds the other products' distractors
    DrawnBoxes.for_catalog([a], no_pairs_in_s2, groups, every_scene=False)  # mining: nothing to mine there, nothing to warn of
    assert "no drawn boxes" not in caplog.text
    with pytest.raises(BoxesFileError, match="both draw scene s1"):
        DrawnBoxes.for_catalog([a, _drawn(tmp_path / "c.json", {"s1": [["vase", 0.1, 0.1, 0.2, 0.2]]})], catalog, groups)
    with pytest.raises(BoxesFileError, match="not product groups"):
        DrawnBoxes.for_catalog([_drawn(tmp_path / "d.json", {"s1": [["chair", 0.1, 0.1, 0.2, 0.2]]})], catalog, groups)
    assert main(["--catalog", str(catalog.root), "--proposals", str(a), "--detector-weights", "x.tflite", "--no-mlflow",
                 "--out", str(tmp_path / "m.json")]) == 2
    assert not (tmp_path / "m.json").exists()


def test_mine_triplets_cli_mines_through_drawn_boxes(synthetic, tmp_path: Path, caplog):
    """The CLI with ``--proposals``: the manifest names the drawing as its detector, and only the mined
    scenes (not the held-out ones) are asked to be drawn."""
    import json

    from training.mine_triplets import main

    catalog, _, _ = synthetic
    drawn = _drawn(tmp_path / "a.json", {"s1": [["lamp", 0.4, 0.05, 0.57, 0.3], ["vase", 130 / 300, 150 / 200, 150 / 300, 190 / 200]]})
    (tmp_path / "hold.txt").write_text("s2\n")
    common = ["--catalog", str(catalog.root), "--proposals", str(drawn), "--weights", "none", "--image-size", "32", "--no-mlflow"]
    assert main([*common, "--holdout-scenes", str(tmp_path / "hold.txt"), "--out", str(tmp_path / "m.json")]) == 0
    assert "no drawn boxes" not in caplog.text  # s2 is held out: nothing to draw there
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["producer"]["detector"].startswith("drawn-boxes:") and manifest["producer"]["holdout_scenes"] == ["s2"]
    mined = {p.product_id: p for p in load_manifest(tmp_path / "m.json").positives if p.source == "detector"}
    assert set(mined) == {"lamp", "v"} and mined["lamp"].box == (120, 10, 171, 60)
    assert main([*common, "--out", str(tmp_path / "m2.json")]) == 0
    assert "1 of the 2 scenes with pairs have no drawn boxes" in caplog.text

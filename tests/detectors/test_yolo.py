"""The Ultralytics wrapper: bad weights give clear errors; on real IKEA photos it finds furniture."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from detectors.category_map import load_category_map
from detectors.yolo import YoloDetector
from engine.data.detection import DetectorError
from engine.data.images import load_image


def test_weights_of_the_wrong_kind_or_missing(tmp_path: Path):
    with pytest.raises(DetectorError, match="expected a .pt, .onnx, .tflite file"):
        YoloDetector(tmp_path / "model.h5")
    with pytest.raises(DetectorError, match="not found"):
        YoloDetector(tmp_path / "missing" / "model.pt")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(DetectorError, match="cannot load detector weights"):
        YoloDetector(broken).class_names


@pytest.fixture(scope="module")
def shared_detector(yolo_weights: Path) -> YoloDetector:
    return YoloDetector(yolo_weights)


@pytest.mark.slow
def test_real_ikea_scenes(shared_detector: YoloDetector, ikea_catalog: Path):
    load_category_map().check_classes(shared_detector.class_names)
    assert len(shared_detector.class_names) == 80 and "couch" in shared_detector.class_names
    scenes = {r["scene"]: ikea_catalog / r["image"] for r in csv.DictReader(open(ikea_catalog / "scenes.csv"))}
    # A living room whose pairs include a three-seat sofa: the detector must find a couch in it.
    pairs = list(csv.DictReader(open(ikea_catalog / "pairs.csv")))
    types = {r["product_id"]: r["type"] for r in csv.DictReader(open(ikea_catalog / "products.csv"))}
    sofa_scenes = sorted({p["scene"] for p in pairs if types[p["product_id"]] == "Three-seat sofa"})
    assert sofa_scenes
    found = 0
    for name in sofa_scenes[:3]:
        image = load_image(scenes[name])
        dets = shared_detector.detect(image)
        h, w = image.shape[:2]
        assert all(0 <= d.box[0] < d.box[2] <= w and 0 <= d.box[1] < d.box[3] <= h for d in dets)
        assert [d.confidence for d in dets] == sorted((d.confidence for d in dets), reverse=True)
        found += any(d.label == "couch" and d.confidence >= 0.3 for d in dets)
    assert found >= 2


@pytest.mark.slow
def test_loading_ultralytics_leaves_pillow_alone(shared_detector: YoloDetector, tmp_path: Path):
    """Ultralytics patches PIL.Image.open to pip-install a HEIF plugin on unknown files; we undo that."""
    import PIL.Image

    shared_detector.class_names  # loads Ultralytics
    junk = tmp_path / "x.png"
    junk.write_text("hello")
    with pytest.raises(PIL.UnidentifiedImageError):
        PIL.Image.open(junk)

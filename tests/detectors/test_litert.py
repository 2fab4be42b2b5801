"""The direct LiteRT detector gives the boxes Ultralytics gives on the same ``.tflite`` file."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.litert import LiteRTDetector, read_class_names
from detectors.open import open_detector
from engine.data.detection import DetectorError
from engine.data.images import load_image


def test_names_from_ultralytics_84_json_metadata(tmp_path: Path):
    """Ultralytics 8.4 zips ``metadata.json`` (JSON: true/false/null) onto the flatbuffer; older exports a dict literal."""
    import json
    import zipfile

    path = tmp_path / "model.tflite"
    path.write_bytes(b"flatbuffer bytes")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("metadata.json", json.dumps({"end2end": False, "args": {"nms": None}, "names": {"0": "lamp", "1": "rug"}}))
    assert read_class_names(path) == ("lamp", "rug")


def test_names_and_errors(yolo_weights: Path, tmp_path: Path):
    names = read_class_names(yolo_weights)
    assert len(names) == 80 and names[56] == "chair"
    with pytest.raises(DetectorError, match="existing .tflite"):
        LiteRTDetector(tmp_path / "missing.tflite")
    with pytest.raises(DetectorError, match="runtime"):
        open_detector(yolo_weights, runtime="tensorrt")


@pytest.mark.slow
def test_same_boxes_as_ultralytics(yolo_weights: Path, ikea_catalog: Path):
    from engine.data.catalog import load_catalog

    scenes = [s.image for s in load_catalog(ikea_catalog).scenes[:6]]
    ours, theirs = open_detector(yolo_weights, conf=0.05), open_detector(yolo_weights, conf=0.05, runtime="ultralytics")
    assert isinstance(ours, LiteRTDetector) and ours.class_names == theirs.class_names
    for path in scenes:
        image = load_image(path)
        a, b = theirs.detect(image), ours.detect(image)
        assert len(a) == len(b) and [d.label for d in a if d.confidence >= 0.25] == [d.label for d in b if d.confidence >= 0.25]
        for x in a:  # every Ultralytics box has its twin: same class, same place, same score within rounding
            best = max((y for y in b if y.label == x.label), key=lambda y: _iou(x.box, y.box))
            assert _iou(x.box, best.box) > 0.8 and abs(x.confidence - best.confidence) < 0.05
            if x.confidence >= 0.25:
                assert _iou(x.box, best.box) > 0.95


def _iou(a, b) -> float:
    ix, iy = max(0, min(a[2], b[2]) - max(a[0], b[0])), max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

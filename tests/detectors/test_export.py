"""Exporting a YOLOv8 checkpoint to float32 TFLite: the file gives the checkpoint's boxes on LiteRT, names inside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detectors.agreement import Agreement, agreement
from detectors.export import _anchors, export_tflite, main
from detectors.litert import LiteRTDetector, read_class_names
from detectors.open import open_detector
from engine.data.detection import Detection, DetectorError
from engine.data.images import load_image


def test_anchors_are_grid_centres_level_by_level():
    points, strides = _anchors([(2, 3), (1, 1)], [8, 16])
    assert points.tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5], [0.5, 0.5]]
    assert strides.ravel().tolist() == [8, 8, 8, 8, 8, 8, 16]


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(DetectorError, match="must end in .tflite"):
        export_tflite(tmp_path / "best.pt", tmp_path / "out.onnx")
    with pytest.raises(DetectorError, match="existing Ultralytics .pt"):
        export_tflite(tmp_path / "missing.pt", tmp_path / "out.tflite")
    assert main(["--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "out.tflite")]) == 2


@pytest.fixture(scope="module")
def checkpoint(yolo_weights: Path, tmp_path_factory) -> Path:
    """The shared detector recovered as an Ultralytics checkpoint (stands in for a trained one)."""
    from detectors.recover import recover_yolov8
    from detectors.yolo import save_checkpoint

    model, imgsz = recover_yolov8(yolo_weights)
    return save_checkpoint(model, tmp_path_factory.mktemp("export") / "model.pt", imgsz=imgsz)


def _ultralytics_square(weights: Path, image: np.ndarray) -> list[Detection]:
    """Ultralytics on the .pt with the square 640 letterbox the export uses (rect=False)."""
    from ultralytics import YOLO

    r = YOLO(str(weights)).predict(image[..., ::-1], conf=0.25, iou=0.7, imgsz=640, rect=False, verbose=False, device="cpu")[0]
    h, w = image.shape[:2]
    out = []
    for (x1, y1, x2, y2), c, k in zip(r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), r.boxes.cls.numpy().astype(int)):
        out.append(Detection((int(max(0, np.floor(x1))), int(max(0, np.floor(y1))), int(min(w, np.ceil(x2))), int(min(h, np.ceil(y2)))), r.names[k], float(c)))
    return out


@pytest.mark.slow
def test_export_gives_the_checkpoints_boxes_on_litert(checkpoint: Path, ikea_catalog: Path, tmp_path: Path):
    from engine.data.catalog import load_catalog

    out = tmp_path / "detector.tflite"
    assert main(["--weights", str(checkpoint), "--out", str(out)]) == 0
    ours = open_detector(out)
    assert isinstance(ours, LiteRTDetector) and ours.imgsz == 640
    assert read_class_names(out) == ours.class_names and len(ours.class_names) == 80 and ours.class_names[56] == "chair"
    total = Agreement()
    for scene in load_catalog(ikea_catalog).scenes[:4]:
        image = load_image(scene.image)
        total = total + agreement(_ultralytics_square(checkpoint, image), ours.detect(image))
    # float32 on both sides, same input: the same scores, the same boxes up to a pixel of rounding
    assert total.matched > 20 and total.unmatched_reference == total.unmatched_other == 0
    assert np.median(total.ious) == 1.0 and min(total.ious) > 0.95 and max(total.score_diffs) < 1e-4
    # Ultralytics reads the file (and its names) too
    theirs = open_detector(out, runtime="ultralytics")
    assert theirs.class_names == ours.class_names

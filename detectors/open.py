"""``open_detector``: the detector for a weights file, on the runtime that runs it fastest."""

from __future__ import annotations

import os
from pathlib import Path

from engine.config import DEFAULT_MIN_CONFIDENCE
from engine.data.detection import Detector, DetectorError

RUNTIMES = ("auto", "litert", "ultralytics")
RUNTIME_ENV = "SHOWROOM_DETECTOR_RUNTIME"


def open_detector(weights: str | Path, *, conf: float = DEFAULT_MIN_CONFIDENCE, runtime: str | None = None) -> Detector:
    """A ``.tflite`` export runs directly on LiteRT with every core (``LiteRTDetector``: the same boxes
    as Ultralytics' path, see ``tests/detectors/test_litert.py``); anything else (``.pt``, ``.onnx``, a
    bare model name to download) through Ultralytics. ``runtime`` (or ``$SHOWROOM_DETECTOR_RUNTIME``)
    forces one: ``litert`` or ``ultralytics``."""
    runtime = runtime or os.environ.get(RUNTIME_ENV) or "auto"
    if runtime not in RUNTIMES:
        raise DetectorError(f"detector runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    tflite = str(weights).lower().endswith(".tflite")
    if runtime == "litert" or (runtime == "auto" and tflite and Path(weights).is_file()):
        from detectors.litert import LiteRTDetector

        return LiteRTDetector(weights, conf=conf)
    from detectors.yolo import YoloDetector

    return YoloDetector(weights, conf=conf)

"""Detections cached per image file, so re-mining and re-evaluating a catalog is cheap; ``cached_detect``
opens the YOLO detector behind that cache (training's and serving's index builds)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from detectors.yolo import YoloDetector
from engine.data.detection import Detection, Detector
from engine.data.proposals import Detect
from engine.files import write_json_atomic


class DetectionCache:
    """Detections per image file, keyed by the file's sha256 and the detector's fingerprint.

    ``folder=None`` caches nothing (every call runs the detector).
    """

    def __init__(self, detector: Detector, folder: Path | None) -> None:
        self.detector = detector
        self.folder = None
        if folder is not None:
            key = hashlib.sha256(detector.fingerprint.encode()).hexdigest()[:16]
            self.folder = Path(folder) / key
            self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def detect(self, path: Path, image: np.ndarray) -> list[Detection]:
        """Detections of ``image`` (decoded from ``path``), from the cache when seen before. A detector
        whose boxes belong to the photo file rather than to its pixels (``detect_at``, e.g.
        ``detectors.drawn.DrawnBoxes``) is asked with the path, and nothing is cached."""
        detect_at = getattr(self.detector, "detect_at", None)
        if detect_at is not None:
            return detect_at(path, image)
        entry = None
        if self.folder is not None:
            entry = self.folder / (hashlib.sha256(Path(path).read_bytes()).hexdigest() + ".json")
            if entry.is_file():
                self.hits += 1
                return [Detection(tuple(d["box"]), d["label"], d["confidence"]) for d in json.loads(entry.read_text())]
        self.misses += 1
        dets = self.detector.detect(image)
        if entry is not None:
            write_json_atomic(entry, [{"box": list(d.box), "label": d.label, "confidence": d.confidence} for d in dets], indent=None)
        return dets


def cached_detect(weights: str, conf: float, cache_dir: Path) -> Detect:
    """The YOLO detector's ``detect`` (``weights``, scores >= ``conf``) behind the detection cache in
    ``cache_dir``: opened in this process or, pickled as a ``partial``, in each worker of a distributed runner."""
    return DetectionCache(YoloDetector(weights, conf=conf), cache_dir).detect

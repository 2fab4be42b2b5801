"""Ultralytics YOLO behind the ``Detector`` protocol, and the Ultralytics side of recovering YOLOv8
weights (building a model, writing a checkpoint); the only module that imports ``ultralytics``.

Results are converted to ``Detection`` at once: no torch object leaves ``detectors/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import DEFAULT_MIN_CONFIDENCE
from engine.data.detection import Detection, DetectorError

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "yolo11n.pt"  # Ultralytics downloads it on first use (needs internet)
WEIGHTS_ENV = "SHOWROOM_DETECTOR_WEIGHTS"


def default_weights() -> str:
    """``$SHOWROOM_DETECTOR_WEIGHTS`` (e.g. an offline copy) or ``yolo11n.pt`` (downloaded by Ultralytics)."""
    return os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS


SUFFIXES = (".pt", ".onnx", ".tflite")


def _configure_ultralytics() -> None:
    """No analytics sync and no MLflow autologging from Ultralytics (it would hijack our runs)."""
    import PIL.Image
    from ultralytics import settings
    from ultralytics.utils import patches

    if settings.get("sync") or settings.get("mlflow"):
        settings.update({"sync": False, "mlflow": False})
    # Ultralytics replaces PIL.Image.open process-wide with a version that pip-installs a HEIF plugin
    # when Pillow cannot identify a file. We only pass decoded arrays to YOLO, so put Pillow's own
    # back: a bad catalog image must fail with our message, never trigger an install.
    original = getattr(patches, "_image_open", None)
    if original is not None and PIL.Image.open is not original:
        PIL.Image.open = original


def build_detection_model(cfg: str, names: Sequence[str]) -> Any:
    """An untrained Ultralytics ``DetectionModel`` (float32, torch) from a model yaml that ships inside
    Ultralytics (``yolov8n.yaml``: no download), with ``len(names)`` classes called ``names``."""
    _configure_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(cfg, nc=len(names), verbose=False)
    model.names = {i: str(n) for i, n in enumerate(names)}
    return model


def save_checkpoint(model: Any, path: str | Path, *, imgsz: int) -> Path:
    """Write ``model`` (a ``DetectionModel``, unfused) as an Ultralytics checkpoint: ``YOLO(path)``
    predicts with it and ``YOLO(path).train(data=...)`` fine-tunes it (for a new class count the
    matching tensors transfer). Float32, no optimizer state; ``imgsz`` is recorded as its train size."""
    _configure_ultralytics()
    from ultralytics import __version__
    from ultralytics.utils.patches import torch_save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.args = {"task": "detect", "imgsz": imgsz}
    checkpoint = {
        "date": datetime.now().astimezone().isoformat(),
        "version": __version__,
        "license": "AGPL-3.0 (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": model.float().eval(),
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"task": "detect", "imgsz": imgsz},
        "train_metrics": None,
        "train_results": None,
    }
    torch_save(checkpoint, path)
    logger.info("wrote %s (%d classes, imgsz %d)", path, len(model.names), imgsz)
    return path


class YoloDetector:
    """YOLO detector from a ``.pt``, ``.onnx`` or ``.tflite`` file, or a bare Ultralytics model name.

    A bare name such as ``yolo11n.pt`` (no folder) is downloaded by Ultralytics; a path must exist.
    ``conf``: minimum confidence kept; ``imgsz``: inference size; ``iou``: NMS threshold.
    """

    def __init__(self, weights: str | Path = DEFAULT_WEIGHTS, *, conf: float = DEFAULT_MIN_CONFIDENCE, iou: float = 0.7, imgsz: int = 640) -> None:
        weights = str(weights)
        path = Path(weights)
        if path.suffix.lower() not in SUFFIXES:
            raise DetectorError(f"detector weights {weights!r}: expected a {', '.join(SUFFIXES)} file")
        is_bare_name = path.name == weights and not path.exists()
        if not is_bare_name and not path.is_file():
            raise DetectorError(f"detector weights {path} not found; pass an existing .pt/.onnx/.tflite file or a bare name like {DEFAULT_WEIGHTS} to download")
        if not 0.0 <= conf <= 1.0:
            raise DetectorError(f"conf must be in [0, 1], got {conf}")
        self.weights, self.conf, self.iou, self.imgsz = weights, conf, iou, imgsz
        self._model = None
        self._names: tuple[str, ...] = ()
        self._lock = threading.Lock()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else weights
        self._fingerprint = f"yolo:{digest}:conf{conf}:iou{iou}:sz{imgsz}"

    def _load(self):
        if self._model is None:
            _configure_ultralytics()
            from ultralytics import YOLO

            try:
                model = YOLO(self.weights, task="detect")
                names = model.names
            except Exception as exc:  # Ultralytics raises many kinds for a bad file
                raise DetectorError(f"cannot load detector weights {self.weights}: {type(exc).__name__}: {exc}") from None
            if not names:
                # Exported formats load their class names lazily; one tiny prediction fills them in.
                model.predict(np.zeros((32, 32, 3), np.uint8), imgsz=self.imgsz, verbose=False, device="cpu")
                names = model.names
            self._names = tuple(names[i] for i in sorted(names))
            self._model = model
        return self._model

    @property
    def class_names(self) -> tuple[str, ...]:
        self._load()
        return self._names

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in ``uint8 (H, W, 3)`` RGB, highest confidence first; boxes clipped to the image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
        model = self._load()
        h, w = image.shape[:2]
        with self._lock:  # Ultralytics predictors are not thread-safe
            result = model.predict(image[..., ::-1], conf=self.conf, iou=self.iou, imgsz=self.imgsz, verbose=False, device="cpu")[0]
        boxes = result.boxes
        xyxy = boxes.xyxy.cpu().numpy() if len(boxes) else np.zeros((0, 4))
        confs = boxes.conf.cpu().numpy() if len(boxes) else np.zeros(0)
        classes = boxes.cls.cpu().numpy().astype(int) if len(boxes) else np.zeros(0, int)
        out = []
        for (x1, y1, x2, y2), c, k in zip(xyxy, confs, classes):
            bx = (int(max(0, np.floor(x1))), int(max(0, np.floor(y1))), int(min(w, np.ceil(x2))), int(min(h, np.ceil(y2))))
            if bx[2] > bx[0] and bx[3] > bx[1]:
                out.append(Detection(bx, str(result.names[int(k)]), float(c)))
        return sorted(out, key=lambda d: -d.confidence)

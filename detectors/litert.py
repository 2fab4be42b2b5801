"""A YOLO ``.tflite`` export run directly on LiteRT (``ai_edge_litert``, XNNPACK), behind ``Detector``.

Ultralytics runs the same file through its LiteRT path with one interpreter thread and its own
pre/post-processing; here the interpreter uses ``num_threads`` (default: every core) and the
letterbox, box decoding and class-aware NMS are ``detectors.postprocess``'s numpy, done the way
Ultralytics does them, so the boxes agree with ``YoloDetector`` on the same file
(``tests/detectors/test_litert.py``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import yaml

from detectors.postprocess import decode, letterbox
from engine.config import DEFAULT_MIN_CONFIDENCE
from engine.data.detection import Detection, DetectorError


def _parse_metadata(text: str) -> dict | None:
    """Ultralytics' zipped metadata: JSON (``metadata.json``, Ultralytics 8.4) or a Python dict literal (older exports)."""
    for parse in (json.loads, ast.literal_eval):
        try:
            meta = parse(text)
        except (ValueError, SyntaxError):
            continue
        if isinstance(meta, dict):
            return meta
    return None


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names of an Ultralytics export: the metadata it zips into the ``.tflite``, else a
    sibling ``<stem without _int8/_float32>_metadata.yaml``."""
    meta = None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if names:
                try:
                    meta = _parse_metadata(zf.read(names[0]).decode("utf-8"))
                except UnicodeDecodeError:
                    meta = None
    if meta is None:
        for stem in (path.stem, path.stem.rsplit("_", 1)[0]):
            sidecar = path.with_name(f"{stem}_metadata.yaml")
            if sidecar.is_file():
                meta = yaml.safe_load(sidecar.read_text())
                break
    names = (meta or {}).get("names")
    if not names:
        raise DetectorError(f"{path}: no class names (neither metadata inside the file nor a *_metadata.yaml beside it)")
    return tuple(str(names[i]) for i in sorted(names, key=int))


class LiteRTDetector:
    """YOLOv8/11 ``.tflite`` (float input ``(1, S, S, 3)`` in [0, 1], output ``(1, 4 + C, A)``) on LiteRT.

    ``conf``: minimum confidence kept; ``iou``: NMS threshold; ``num_threads``: interpreter threads.
    """

    def __init__(self, weights: str | Path, *, conf: float = DEFAULT_MIN_CONFIDENCE, iou: float = 0.7, num_threads: int | None = None) -> None:
        path = Path(weights)
        if path.suffix.lower() != ".tflite" or not path.is_file():
            raise DetectorError(f"detector weights {path}: expected an existing .tflite file")
        if not 0.0 <= conf <= 1.0:
            raise DetectorError(f"conf must be in [0, 1], got {conf}")
        from ai_edge_litert.interpreter import Interpreter

        self.weights, self.conf, self.iou = str(path), conf, iou
        self.num_threads = num_threads or os.cpu_count() or 1
        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=self.num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DetectorError(f"cannot load {path} with LiteRT: {exc}") from None
        inp = self._interpreter.get_input_details()[0]
        out = self._interpreter.get_output_details()[0]
        if len(inp["shape"]) != 4 or inp["shape"][1] != inp["shape"][2] or inp["dtype"] != np.float32 or len(out["shape"]) != 3:
            raise DetectorError(f"{path}: not a float YOLO detection export (input {inp['shape']} {inp['dtype']}, output {out['shape']})")
        self.imgsz = int(inp["shape"][1])
        self._input, self._output = inp["index"], out["index"]
        self._names = read_class_names(path)
        if out["shape"][1] != 4 + len(self._names):
            raise DetectorError(f"{path}: output has {out['shape'][1] - 4} classes but the metadata names {len(self._names)}")
        self._lock = threading.Lock()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        self._fingerprint = f"litert:{digest}:conf{conf}:iou{iou}:sz{self.imgsz}"

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def forward(self, image: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
        """The raw output ``float32 (4 + C, A)`` for ``uint8 (H, W, 3)`` RGB, with the letterbox scale and padding."""
        boxed, scale, pad = letterbox(image, self.imgsz)
        x = (boxed.astype(np.float32) / 255.0)[None]
        with self._lock:  # one interpreter: one invocation at a time
            self._interpreter.set_tensor(self._input, x)
            self._interpreter.invoke()
            y = self._interpreter.get_tensor(self._output)[0].copy()
        return y, scale, pad

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in ``uint8 (H, W, 3)`` RGB, highest confidence first; boxes clipped to the image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
        y, scale, pad = self.forward(image)
        return decode(y, box_scale=self.imgsz, scale=scale, pad=pad, image_hw=image.shape[:2], names=self._names, conf=self.conf, iou=self.iou)

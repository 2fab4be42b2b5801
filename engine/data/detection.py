"""The detector boundary: a frozen ``Detection`` and the ``Detector`` protocol every backend implements.

The engine consumes detections through this protocol; the backends live in ``detectors/`` (YOLO)
and tests pass fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (0 when both are empty)."""
    inter = box_intersection(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_intersection(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The area two ``(x1, y1, x2, y2)`` boxes share."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


class DetectorError(ValueError):
    """Detector weights that are missing or of the wrong kind, or a bad class name."""


@dataclass(frozen=True)
class Detection:
    """One detected object: ``box`` in pixels (x1, y1, x2, y2; x2/y2 exclusive), class name, confidence."""

    box: tuple[int, int, int, int]
    label: str
    confidence: float

    @property
    def area(self) -> int:
        x1, y1, x2, y2 = self.box
        return max(0, x2 - x1) * max(0, y2 - y1)


class Detector(Protocol):
    """Finds objects in an RGB image."""

    @property
    def class_names(self) -> tuple[str, ...]:
        """Every class the detector can report."""
        ...

    @property
    def fingerprint(self) -> str:
        """Identifies weights and settings, so cached detections are never reused across detectors."""
        ...

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in ``image`` (``uint8 (H, W, 3)`` RGB), highest confidence first."""
        ...

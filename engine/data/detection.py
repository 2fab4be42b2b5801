"""The detector boundary: a frozen ``Detection`` and the ``Detector`` protocol every backend implements.

The engine consumes detections through this protocol; the backends live in ``detectors/`` (YOLO)
and tests pass fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


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

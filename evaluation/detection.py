"""Detector quality on real, hand-drawn boxes: average precision per product group, pure numpy.

A detector of the product groups is compared with another (e.g. the COCO detector, whose classes
are mapped to groups by ``detectors/product_groups.yaml`` ``from_classes``) on the same photos and
boxes. AP@0.5 is the area under the precision-recall curve of a group's detections, most confident
first, each matched to the unmatched true box of the group it overlaps most (IoU >= 0.5), with
precision made monotone (all-point interpolation, as PASCAL VOC 2010+ and COCO do). A group with
no true box has no AP; a detector that never proposes a group scores 0 on it.

``detectors.drawn.DrawnBoxes`` turns the same boxes around: it stands in for a detector that finds
exactly them (``evaluation.evaluate --proposals``, ``training.mine_triplets --proposals``).

``DetectionRecorder`` and ``RecordedDetections`` make an evaluation's boxes part of its record:
the first keeps every detection a call's detector returned (keyed by the photo file's sha256), the
second proposes exactly those again (``evaluation.evaluate --detections``), so a figure can be
reproduced on a machine whose detector runtime gives slightly different boxes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.detection import Detection, box_iou
from engine.files import file_sha256

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Scored:
    """One detection of a photo: its ``group``, ``box`` (pixels) and ``confidence``."""

    image: str
    group: str
    box: Box
    confidence: float


def average_precision(detections: Sequence[Scored], truth: Mapping[str, Sequence[Box]], min_iou: float = 0.5) -> float:
    """AP of one group: ``detections`` of that group over all photos, ``truth`` its true boxes per photo."""
    n_true = sum(len(v) for v in truth.values())
    if n_true == 0:
        return float("nan")
    used = {k: np.zeros(len(v), bool) for k, v in truth.items()}
    hits = []
    for d in sorted(detections, key=lambda d: -d.confidence):
        boxes = truth.get(d.image, ())
        overlaps = [box_iou(d.box, t) for t in boxes]
        best = int(np.argmax(overlaps)) if overlaps else -1
        if best >= 0 and overlaps[best] >= min_iou and not used[d.image][best]:
            used[d.image][best] = True
            hits.append(1.0)
        else:
            hits.append(0.0)
    if not hits:
        return 0.0
    tp = np.cumsum(hits)
    recall = tp / n_true
    precision = tp / np.arange(1, len(hits) + 1)
    # all-point interpolation: precision at each recall level is the best at that recall or beyond
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    r = np.concatenate([[0.0], recall])
    return float(np.sum((r[1:] - r[:-1]) * precision))


def ap_per_group(detections: Sequence[Scored], truth: Mapping[str, Sequence[tuple[str, Box]]],
                 min_iou: float = 0.5) -> dict[str, float]:
    """AP@``min_iou`` of every group with a true box; ``truth``: photo -> [(group, box)]."""
    by_group: dict[str, dict[str, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for image, boxes in truth.items():
        for group, box in boxes:
            by_group[group][image].append(box)
    dets: dict[str, list[Scored]] = defaultdict(list)
    for d in detections:
        dets[d.group].append(d)
    return {g: average_precision(dets.get(g, []), boxes, min_iou) for g, boxes in sorted(by_group.items())}


def box_recall(proposals: Sequence[Scored], truth: Mapping[str, Sequence[tuple[str, Box]]], min_iou: float = 0.5) -> dict[str, float]:
    """Per group, the share of true boxes that some proposal of the same group overlaps by ``min_iou``
    (the boxes a page offers, whatever their order)."""
    found: dict[str, list[bool]] = defaultdict(list)
    by_image: dict[str, list[Scored]] = defaultdict(list)
    for p in proposals:
        by_image[p.image].append(p)
    for image, boxes in truth.items():
        for group, box in boxes:
            found[group].append(any(p.group == group and box_iou(p.box, box) >= min_iou for p in by_image.get(image, ())))
    return {g: float(np.mean(v)) for g, v in sorted(found.items())}


DETECTIONS_FORMAT = "showroom.detections"
DETECTIONS_VERSION = 1


class DetectionsFileError(ValueError):
    """A detections record that cannot be replayed: unreadable, of another format, or missing a photo."""


class DetectionRecorder:
    """Wraps a ``detect(path, image) -> list[Detection]`` callable and keeps what it returned for
    each photo, keyed by the file's sha256 (the same photo under another path is the same entry).
    ``record()`` is the JSON ``RecordedDetections.read`` takes back; ``confidence``: the lowest score
    the wrapped detector reports (a replay may ask for more, never for less)."""

    def __init__(self, detect: Callable[[str | Path, np.ndarray], list[Detection]], fingerprint: str,
                 class_names: Sequence[str], confidence: float) -> None:
        self._detect = detect
        self.fingerprint = fingerprint
        self.class_names = tuple(class_names)
        self.confidence = float(confidence)
        self.images: dict[str, list[Detection]] = {}

    def detect(self, path: str | Path, image: np.ndarray) -> list[Detection]:
        dets = self._detect(path, image)
        self.images[file_sha256(path)] = list(dets)
        return dets

    def record(self) -> dict:
        """``{"format", "version", "detector", "class_names", "confidence", "images": {sha256: [{box, label,
        confidence}]}}``, photos in sha256 order."""
        return {"format": DETECTIONS_FORMAT, "version": DETECTIONS_VERSION, "detector": self.fingerprint,
                "class_names": list(self.class_names), "confidence": self.confidence,
                "images": {k: [{"box": [int(v) for v in d.box], "label": d.label, "confidence": float(d.confidence)}
                               for d in self.images[k]] for k in sorted(self.images)}}


@dataclass(frozen=True)
class RecordedDetections:
    """A detector replayed from a ``DetectionRecorder`` record: each photo gets exactly the recorded
    detections of its file (by sha256) with a score >= ``confidence``. A photo the record does not
    hold is refused (``DetectionsFileError``), never silently left without boxes."""

    images: Mapping[str, tuple[Detection, ...]]
    class_names: tuple[str, ...]
    recorded: str  # the recorded detector's fingerprint
    confidence: float
    source: str

    @classmethod
    def read(cls, path: str | Path, confidence: float | None = None) -> RecordedDetections:
        """The record at ``path``; ``confidence``: the lowest score this replay needs (default: the
        record's), refused when below the record's (those detections were never kept)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DetectionsFileError(f"detections record {path}: cannot read it ({e})") from e
        if not isinstance(data, dict) or data.get("format") != DETECTIONS_FORMAT:
            raise DetectionsFileError(f"{path} is not a detections record (format {DETECTIONS_FORMAT!r}, written as "
                                      "detections.json beside an evaluation's metrics.json)")
        if data.get("version") != DETECTIONS_VERSION:
            raise DetectionsFileError(f"detections record {path}: version {data.get('version')!r}, this code reads {DETECTIONS_VERSION}")
        try:
            recorded_conf = float(data["confidence"])
            names = tuple(str(n) for n in data["class_names"])
            images = {str(k): tuple(Detection(tuple(int(v) for v in d["box"]), str(d["label"]), float(d["confidence"])) for d in dets)
                      for k, dets in data["images"].items()}
            fingerprint = str(data["detector"])
        except (KeyError, TypeError, ValueError) as e:
            raise DetectionsFileError(f"detections record {path}: malformed ({type(e).__name__}: {e})") from e
        unknown = sorted({d.label for dets in images.values() for d in dets} - set(names))
        if unknown:
            raise DetectionsFileError(f"detections record {path}: labels {unknown[:5]} are not among its class names")
        need = recorded_conf if confidence is None else float(confidence)
        if need < recorded_conf - 1e-9:
            raise DetectionsFileError(f"detections record {path} kept scores >= {recorded_conf:g}; this evaluation needs boxes down "
                                      f"to {need:g}: record it again with that confidence")
        return cls(images, names, fingerprint, need, str(path))

    @property
    def fingerprint(self) -> str:
        return f"{self.recorded}|replayed>={self.confidence:g}"

    def detect(self, image: np.ndarray) -> list[Detection]:
        raise TypeError("recorded detections belong to a photo file, not to its pixels: use detect_at(path, image)")

    def detect_at(self, path: str | Path, image: np.ndarray) -> list[Detection]:
        """The recorded detections of the photo file at ``path`` scoring >= ``confidence``, in
        recorded order (``image`` is unused: the record is keyed by the file's bytes)."""
        dets = self.images.get(file_sha256(path))
        if dets is None:
            raise DetectionsFileError(f"{path}: this photo is not in the detections record {self.source} (recorded by "
                                      f"{self.recorded}); replay it on the catalog and scenes it was recorded on")
        return [d for d in dets if d.confidence >= self.confidence]

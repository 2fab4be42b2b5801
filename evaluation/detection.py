"""Detector quality on real, hand-drawn boxes: average precision per product group, pure numpy.

A detector of the product groups is compared with another (e.g. the COCO detector, whose classes
are mapped to groups by ``detectors/product_groups.yaml`` ``from_classes``) on the same photos and
boxes. AP@0.5 is the area under the precision-recall curve of a group's detections, most confident
first, each matched to the unmatched true box of the group it overlaps most (IoU >= 0.5), with
precision made monotone (all-point interpolation, as PASCAL VOC 2010+ and COCO do). A group with
no true box has no AP; a detector that never proposes a group scores 0 on it.

``DrawnBoxes`` turns the same boxes around: it stands in for a detector that finds exactly them,
so the whole-room scores can be measured on perfect proposals (``evaluation.evaluate --proposals``)
and a real detector's cost read as the paired difference against them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.boxes import BoxesFileError, RelativeBox, read_boxes, to_pixels
from engine.data.catalog import Catalog
from engine.data.detection import Detection, box_iou

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


@dataclass(frozen=True)
class DrawnBoxes:
    """Hand-drawn boxes standing in for a detector of the product groups: every box of a scene is
    proposed, sure (confidence 1.0) and labelled by its group, as a detector that found exactly
    them would propose it. ``boxes``: each scene photo's path → its ``(group, relative box)`` rows;
    ``class_names``: every product group (so the groups map applies); ``detect_at`` is the
    ``evaluation.protocol.prepare`` detect callable (a drawn box belongs to a photo, not to pixels)."""

    boxes: Mapping[str, tuple[tuple[str, RelativeBox], ...]]
    class_names: tuple[str, ...]
    fingerprint: str

    @classmethod
    def for_catalog(cls, path: str | Path, catalog: Catalog, groups: Collection[str]) -> DrawnBoxes:
        """The boxes of ``path`` (a ``showroom.boxes`` file) on ``catalog``'s scenes; refused
        (``BoxesFileError``) when a box names no group of ``groups`` or a scene has no boxes (every
        evaluated scene must be drawn, or its products would count as missed by the detector)."""
        rows = read_boxes(path)
        unknown = sorted({g for boxes in rows.values() for g, _ in boxes} - set(groups))
        if unknown:
            raise BoxesFileError(f"boxes file {path}: groups {unknown[:5]} are not product groups ({', '.join(sorted(groups))})")
        missing = [s.scene for s in catalog.scenes if not rows.get(s.scene)]
        if missing:
            raise BoxesFileError(f"boxes file {path} has no boxes for {len(missing)} of the {len(catalog.scenes)} evaluated scenes, "
                                 f"e.g. {missing[:3]}: evaluate only the scenes it covers (--scenes)")
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        return cls({str(s.image): tuple(rows[s.scene]) for s in catalog.scenes}, tuple(sorted(groups)), f"drawn-boxes:{digest}")

    def detect(self, image: np.ndarray) -> list[Detection]:
        raise TypeError("drawn boxes belong to a scene photo, not to its pixels: use detect_at(path, image)")

    def detect_at(self, path: str | Path, image: np.ndarray) -> list[Detection]:
        """The drawn boxes of the photo at ``path`` (``uint8 (H, W, 3)``), in pixels, most confident
        (all 1.0) in file order."""
        h, w = image.shape[:2]
        return [Detection(to_pixels(box, w, h), group, 1.0) for group, box in self.boxes.get(str(path), ())]

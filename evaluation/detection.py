"""Detector quality on real, hand-drawn boxes: average precision per product group, pure numpy.

A detector of the product groups is compared with another (e.g. the COCO detector, whose classes
are mapped to groups by ``detectors/product_groups.yaml`` ``from_classes``) on the same photos and
boxes. AP@0.5 is the area under the precision-recall curve of a group's detections, most confident
first, each matched to the unmatched true box of the group it overlaps most (IoU >= 0.5), with
precision made monotone (all-point interpolation, as PASCAL VOC 2010+ and COCO do). A group with
no true box has no AP; a detector that never proposes a group scores 0 on it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.data.detection import box_iou

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

"""Where the products in a scene are: the one rule that proposes scene crops, for indexing,
evaluation, mining and the search service.

The rule, per scene: the boxes its ``pairs.csv`` rows give; the detector's boxes at or above
``min_confidence`` when some pair of the scene has no box (or the scene has no pairs), plus, for
each class of interest (the category map's) with no such box, its best box down to
``fill_confidence``; the whole scene when nothing else was found.

``page_boxes`` is what the page offers a shopper out of a photo's proposed objects (the same rule
for the service's room call and for evaluation): sure boxes first, no near-copy of a stronger box,
at most ``MAX_PAGE_BOXES``.

``windows`` gives a fixed, class-agnostic set of multi-scale windows (whole photo, 2x2 and 3x3
grids) for products no detector class covers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.catalog import Box, Catalog, Pair, Scene
from engine.config import Preprocessing
from engine.data.detection import Detection, box_intersection, box_iou
from engine.data.images import ImageError, load_image

logger = logging.getLogger(__name__)

MAX_PAGE_BOXES = 24  # boxes the page draws at most: more would hide the photo on a phone
PAGE_IOU = 0.7  # a box overlapping a kept one more than this is a copy of it
PAGE_INSIDE = 0.8  # ... as is one of the same label lying this much inside a kept one

Detect = Callable[[Path, np.ndarray], list[Detection]]  # (image file, its pixels) -> detections


@dataclass(frozen=True)
class SceneCrop:
    """One proposed crop of a scene: a ``pairs.csv`` box (``source='pairs.csv'``, ``label`` = the
    pair's product type), a detection (``source='detector'``, ``label`` = its class) or the whole
    scene when nothing else was found (``source='scene'``, ``box`` None)."""

    scene: str
    box: Box | None
    label: str
    source: str
    confidence: float = 1.0


@dataclass(frozen=True)
class SceneProposals:
    """A scene's decoded photo and its crops; ``image`` is None (and ``error`` says why) when the
    photo could not be read. ``detections`` are all the detector returned, before the confidence
    filter (empty when the detector did not run)."""

    scene: Scene
    image: np.ndarray | None
    pairs: tuple[Pair, ...]
    crops: tuple[SceneCrop, ...]
    detections: tuple[Detection, ...] = ()
    error: str = ""


def confident(detections: Sequence[Detection], min_confidence: float, fill_confidence: float = 0.0,
              classes: Collection[str] | None = None) -> list[Detection]:
    """The detections at or above ``min_confidence``; then, for each of ``classes`` (None: every
    class detected) with none of those, its single best detection at or above ``fill_confidence``
    (0 = no fill). Most confident first."""
    keep = [d for d in detections if d.confidence >= min_confidence]
    if fill_confidence > 0:
        present = {d.label for d in keep}
        best: dict[str, Detection] = {}
        for d in detections:
            if d.label not in present and (classes is None or d.label in classes) and d.confidence >= fill_confidence:
                if d.label not in best or d.confidence > best[d.label].confidence:
                    best[d.label] = d
        keep += best.values()
    return sorted(keep, key=lambda d: -d.confidence)


def page_boxes(detections: Sequence[Detection], min_confidence: float, labels: Collection[str] | None = None,
               max_boxes: int = MAX_PAGE_BOXES) -> list[Detection]:
    """The boxes the page offers out of ``detections`` (e.g. ``confident``'s): those of ``labels``
    (None: any), sure ones (at or above ``min_confidence``) first, then by confidence; a box is
    dropped when its IoU with a kept box exceeds ``PAGE_IOU`` or, of the same label, ``PAGE_INSIDE``
    of it lies inside a kept box; at most ``max_boxes``. Idempotent: applied to its own output it
    returns it unchanged."""
    pool = sorted((d for d in detections if labels is None or d.label in labels),
                  key=lambda d: (d.confidence < min_confidence, -d.confidence))
    kept: list[Detection] = []
    for d in pool:
        if len(kept) >= max_boxes:
            break
        if any(box_iou(k.box, d.box) > PAGE_IOU or (k.label == d.label and box_intersection(d.box, k.box) > PAGE_INSIDE * d.area) for k in kept):
            continue
        kept.append(d)
    return kept


WINDOW = "window"  # the label of a fixed window in the scenes index ("where is it used?" beyond the proposed objects)


def windows(width: int, height: int, grids: Sequence[int] = (1, 2, 3), overlap: float = 0.2) -> list[Box]:
    """Class-agnostic windows: for each n of ``grids`` an n x n grid of boxes overlapping by
    ``overlap`` of their side, covering the ``width`` x ``height`` photo (n = 1: the whole photo)."""

    def spans(length: int, n: int) -> list[tuple[int, int]]:
        size = length / (n - (n - 1) * overlap)
        step = size * (1 - overlap)
        return [(int(round(i * step)), min(length, int(round(i * step + size)))) for i in range(n)]

    return [(x1, y1, x2, y2) for n in grids for y1, y2 in spans(height, n) for x1, x2 in spans(width, n)]


def needs_detection(pairs: Sequence[Pair]) -> bool:
    """A scene is searched by the detector unless every one of its pairs has a box."""
    return not pairs or any(p.box is None for p in pairs)


def propose_crops(scene: str, pair_boxes: Sequence[tuple[Box, str]], detections: Sequence[Detection],
                  prep: Preprocessing, classes: Collection[str] | None = None,
                  page_labels: Collection[str] | None = None) -> list[SceneCrop]:
    """The crops of one scene: ``pair_boxes`` (box, product type) first, then the confident
    detections (``confident`` with ``prep``'s thresholds; with ``page_labels``, only those the page
    offers of those labels: ``page_boxes``), else the whole scene."""
    crops = [SceneCrop(scene, box, label, "pairs.csv") for box, label in pair_boxes]
    chosen = confident(detections, prep.min_confidence, prep.fill_confidence, classes)
    if page_labels is not None:
        chosen = page_boxes(chosen, prep.min_confidence, page_labels)
    crops += [SceneCrop(scene, d.box, d.label, "detector", float(d.confidence)) for d in chosen]
    return crops or [SceneCrop(scene, None, "scene", "scene")]


def catalog_proposals(catalog: Catalog, detect: Detect | None, prep: Preprocessing,
                      classes: Collection[str] | None = None, page_labels: Collection[str] | None = None) -> Iterator[SceneProposals]:
    """Decode each scene of ``catalog`` once and propose its crops, in ``scenes.csv`` order.

    ``detect`` may be None only when every pair has a box (a scene without pairs is then the
    whole photo); it must report boxes down to ``prep.detector_confidence``. ``classes``: the
    classes whose missing boxes are filled in (the category map's); ``page_labels``: keep only the
    detections the page offers of those labels (``propose_crops``). An unreadable scene is
    logged and yielded with ``image`` None and no crops.
    """
    types = catalog.types
    pairs_of: dict[str, list[Pair]] = defaultdict(list)
    for pair in catalog.pairs:
        pairs_of[pair.scene].append(pair)
    for scene in catalog.scenes:
        pairs = tuple(pairs_of.get(scene.scene, ()))
        try:
            image = load_image(scene.image)
        except ImageError as exc:
            logger.warning("skipping scene %s: %s", scene.scene, exc)
            yield SceneProposals(scene, None, pairs, (), error=str(exc))
            continue
        detections = detect(scene.image, image) if detect is not None and needs_detection(pairs) else []
        boxes = [(p.box, types[p.product_id]) for p in pairs if p.box is not None]
        yield SceneProposals(scene, image, pairs, tuple(propose_crops(scene.scene, boxes, detections, prep, classes, page_labels)), tuple(detections))

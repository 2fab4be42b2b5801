"""Where the products in a scene are: the one rule that proposes scene crops, for indexing,
evaluation, mining and the search service.

The rule, per scene: the boxes its ``pairs.csv`` rows give; the detector's boxes at or above
``min_confidence`` when some pair of the scene has no box (or the scene has no pairs), plus, for
each class of interest (the category map's) with no such box, its best box down to
``fill_confidence``; the whole scene when nothing else was found.

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
from engine.data.detection import Detection
from engine.data.images import ImageError, load_image

logger = logging.getLogger(__name__)

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
                  prep: Preprocessing, classes: Collection[str] | None = None) -> list[SceneCrop]:
    """The crops of one scene: ``pair_boxes`` (box, product type) first, then the confident
    detections (``confident`` with ``prep``'s thresholds), else the whole scene."""
    crops = [SceneCrop(scene, box, label, "pairs.csv") for box, label in pair_boxes]
    chosen = confident(detections, prep.min_confidence, prep.fill_confidence, classes)
    crops += [SceneCrop(scene, d.box, d.label, "detector", float(d.confidence)) for d in chosen]
    return crops or [SceneCrop(scene, None, "scene", "scene")]


def catalog_proposals(catalog: Catalog, detect: Detect | None, prep: Preprocessing,
                      classes: Collection[str] | None = None) -> Iterator[SceneProposals]:
    """Decode each scene of ``catalog`` once and propose its crops, in ``scenes.csv`` order.

    ``detect`` may be None only when every pair has a box (a scene without pairs is then the
    whole photo); it must report boxes down to ``prep.detector_confidence``. ``classes``: the
    classes whose missing boxes are filled in (the category map's). An unreadable scene is
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
        yield SceneProposals(scene, image, pairs, tuple(propose_crops(scene.scene, boxes, detections, prep, classes)), tuple(detections))

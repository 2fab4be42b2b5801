"""The query engine of the search service: detect → crop → embed → search, "where is it used?", and
"shop this room": every proposed object with its group and matches, and one list for the room."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.calibration import MatchCalibrator
from engine.data.detection import Detection, Detector
from engine.data.images import Box, check_box, query_crop
from engine.index.catalog_index import CatalogIndex, Match
from engine.index.hubness import HubCorrection, fetch_size
from engine.data.proposals import confident, page_boxes

if TYPE_CHECKING:
    from engine.model.embedder import Embedder  # loads Keras: the query engine is handed a loaded one


@dataclass
class Timings:
    """Milliseconds per stage of one query."""

    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.stages[stage] = round((now - start) * 1000.0, 2)
        return now


@dataclass(frozen=True)
class RoomObject:
    """One object of a room: its ``box`` and detector ``label``, the product ``group`` that label
    belongs to, the detector's ``confidence``, whether it is ``sure`` (at or above the model's
    ``min_confidence``; else a fill-in the page shows as less sure) and its ``matches``."""

    box: Box
    label: str
    group: str
    confidence: float
    sure: bool
    matches: tuple[Match, ...]


@dataclass(frozen=True)
class Room:
    """"Shop this room": its ``objects`` (most confident first) and ``products``, the room's one
    ranked list of product ids (``room_ranking``)."""

    objects: tuple[RoomObject, ...]
    products: tuple[str, ...]


ROOM_ORDERS = ("turns", "distance", "confidence")
ROOM_ORDER = "confidence"  # the room list's order, chosen on development scenes (docs/evaluation.md)


def room_ranking(per_object: Sequence[Sequence[str]], k: int | None = None, distances: Sequence[Sequence[float]] | None = None,
                 order: str = "turns", confidences: Sequence[float] | None = None) -> list[str]:
    """One ranked list of a room from each object's ranked product ids (objects most confident
    first); each product once, at its best place; the first ``k`` (None: all).

    ``order`` "turns": every object's first match, then every object's second, and so on.
    "distance": every match of every object, nearest first by ``distances`` (each object's match
    distances, the shape of ``per_object``). "confidence": turns weighted by the detector's
    ``confidences`` (one per object, in [0, 1]): an object's r-th match (r = 1, 2, ...) is placed at
    r / confidence, so an object half as sure gets half as many places (one of confidence 0 after
    every other). Ties keep the turns order.
    """
    if order not in ROOM_ORDERS:
        raise ValueError(f"room order {order!r}: choose one of {', '.join(ROOM_ORDERS)}")
    if order == "distance" and (distances is None or [len(d) for d in distances] != [len(p) for p in per_object]):
        raise ValueError("room order 'distance' needs each match's distance, in the shape of the matches")
    if order == "confidence":
        if confidences is None or len(confidences) != len(per_object):
            raise ValueError("room order 'confidence' needs one detector confidence per object")
        if not all(0 <= c <= 1 for c in confidences):
            raise ValueError(f"room order 'confidence': confidences must be in [0, 1], got {list(confidences)}")
    entries = [(r, i, products[r]) for i, products in enumerate(per_object) for r in range(len(products))]
    if order == "distance":
        key = lambda e: (distances[e[1]][e[0]], e[0], e[1])  # noqa: E731
    elif order == "confidence":
        key = lambda e: ((e[0] + 1) / confidences[e[1]] if confidences[e[1]] > 0 else float("inf"), e[0], e[1])  # noqa: E731
    else:
        key = lambda e: (e[0], e[1])  # noqa: E731
    out: list[str] = []
    seen: set[str] = set()
    for _, _, product in sorted(entries, key=key):
        if product not in seen:
            seen.add(product)
            out.append(product)
            if k is not None and len(out) == k:
                break
    return out


@dataclass
class SearchEngine:
    """The query side: an embedder (with its preprocessing), an optional detector, the products
    index and the scene-crops index."""

    embedder: Embedder
    products: CatalogIndex
    scenes: CatalogIndex | None = None
    detector: Detector | None = None
    classes: frozenset[str] | None = None  # whose missing boxes are filled in (the category map's)
    label_groups: Mapping[str, str] = field(default_factory=dict)  # detector class -> product group
    group_types: Mapping[str, frozenset[str]] = field(default_factory=dict)  # product group -> the catalog types in it
    calibrator: MatchCalibrator | None = None  # P(same product) of a result, and the "no close match" threshold
    hubness: HubCorrection | None = None  # results ranked by distance minus the product's room density (engine.index.hubness)
    room_order: str = ROOM_ORDER  # how room() merges its objects' matches (room_ranking's order)
    _detect_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def detect(self, image: np.ndarray, timings: Timings | None = None) -> list[Detection]:
        """The proposed objects of ``uint8 (H, W, 3)``: the confident detections and each class's
        fill-in (``engine.data.proposals.confident``), most confident first; empty without a detector.

        One detection runs at a time (detectors are not thread-safe); ``timings`` gets the wait for
        that turn (``detect_wait``) apart from the detection itself (``detect``).
        """
        prep = self.embedder.preprocessing
        return confident(self._detect_all(image, timings), prep.min_confidence, prep.fill_confidence, self.classes)

    def _detect_all(self, image: np.ndarray, timings: Timings | None = None) -> list[Detection]:
        """Every detection the detector reports (down to its own floor)."""
        if self.detector is None:
            return []
        timings = timings if timings is not None else Timings()
        t = time.perf_counter()
        with self._detect_lock:
            t = timings.add("detect_wait", t)
            found = self.detector.detect(image)
            timings.add("detect", t)
        return list(found)

    def region_at(self, image: np.ndarray, x: float, y: float, timings: Timings | None = None) -> tuple[Box, str]:
        """The region under a tap at pixel ``(x, y)``, and its label: the smallest proposed object
        (``detect``) that contains the point; else the smallest of every detection the detector
        reported that does; else a square around the point, a third of the photo's shorter side
        (label ``""``)."""
        h, w = image.shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"point ({x:g}, {y:g}) is outside the {w}x{h} photo")
        found = self._detect_all(image, timings)
        prep = self.embedder.preprocessing
        for pool in (confident(found, prep.min_confidence, prep.fill_confidence, self.classes), found):
            under = [d for d in pool if d.box[0] <= x < d.box[2] and d.box[1] <= y < d.box[3]]
            if under:
                d = min(under, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
                return d.box, d.label
        half = max(8, min(w, h) // 6)
        x1, y1 = int(min(max(0, x - half), max(0, w - 2 * half))), int(min(max(0, y - half), max(0, h - 2 * half)))
        return (x1, y1, min(w, x1 + 2 * half), min(h, y1 + 2 * half)), ""

    def warm_up(self) -> float:
        """Run each stage once on a blank photo so the first real query does not pay for tracing the
        embedder's graph function or the detector's first invocation (hundreds of ms on a CPU);
        returns the seconds it took. The embedder runs on one crop (a search) and on two (a room
        call's batch): its graph function is traced once for one image and once more, for any
        batch size, at the second size it meets."""
        t = time.perf_counter()
        blank = np.full((480, 640, 3), 255, np.uint8)
        self.detect(blank)
        self.search(blank, None, k=1)
        size = self.embedder.preprocessing.image_size
        self.embedder(np.full((2, size, size, 3), 255, np.uint8))
        return time.perf_counter() - t

    def embed_crop(self, image: np.ndarray, box: Box | None) -> np.ndarray:
        """Embedding ``float32 (D,)`` of the padded square crop of ``box`` (whole image when None)."""
        if box is not None:
            h, w = image.shape[:2]
            box = check_box(box, w, h)
        prep = self.embedder.preprocessing
        return self.embedder(query_crop(image, box, prep.image_size, prep.crop_padding)[None])[0]

    def search(self, image: np.ndarray, box: Box | None, k: int = 10, types: Set[str] | None = None,
               timings: Timings | None = None) -> list[Match]:
        """The k products nearest to the crop of ``box`` in ``image``, optionally only of ``types``;
        each product and each distinct catalog photo once."""
        timings = timings if timings is not None else Timings()
        t = time.perf_counter()
        vec = self.embed_crop(image, box)
        t = timings.add("embed", t)
        matches = self._nearest(vec, k, types)
        timings.add("search", t)
        return matches

    def _nearest(self, vec: np.ndarray, k: int, types: Set[str] | None) -> list[Match]:
        """The k best products of one query ``float32 (D,)`` (``search_distinct``), re-ranked by the hub
        correction when the engine has one (from a wider set of nearest results)."""
        if self.hubness is None:
            return self.products.search_distinct(vec[None], k, types)[0]
        return self.hubness.rerank(self.products.search_distinct(vec[None], fetch_size(k, len(self.products)), types)[0], k)

    def judge(self, matches: Sequence[Match]) -> tuple[list[float] | None, bool | None]:
        """The calibrated probability that each of ``matches`` (one query's results, best first) is the
        query's product, and whether the best is a close match (its probability at or above the
        calibrator's threshold); (None, None) without a calibrator or a match."""
        if self.calibrator is None or not matches:
            return None, None
        probs = self.calibrator.results(np.array([[m.distance for m in matches]], np.float64))[0]
        return [float(p) for p in probs], bool(probs[0] >= self.calibrator.threshold)

    def types_of_group(self, group: str) -> frozenset[str] | None:
        """The catalog types a search within ``group`` covers; None (every product) when the catalog
        holds none of that group. ValueError for a group the engine does not know: neither one the
        detector proposes nor one the catalog's types fall in."""
        types = self.group_types.get(group)
        if types is None and group not in self.label_groups.values():
            known = ", ".join(sorted({*self.label_groups.values(), *self.group_types})) or "none: the served detector proposes no product group"
            raise ValueError(f"unknown product group {group[:40]!r}; the groups are {known}")
        return types or None

    def room(self, image: np.ndarray, k: int = 5, timings: Timings | None = None) -> Room:
        """"Shop this room": every proposed object of a product group the page offers (the detector's
        confident boxes and its fill-ins, ``engine.data.proposals.page_boxes``), embedded as one batch, each searched among its group's catalog types
        (every product when the group holds none); the room's ranked list (``room_ranking``)."""
        timings = timings if timings is not None else Timings()
        prep = self.embedder.preprocessing
        found = page_boxes(self.detect(image, timings), prep.min_confidence, self.label_groups)
        t = time.perf_counter()
        crops = [query_crop(image, d.box, prep.image_size, prep.crop_padding) for d in found]
        vectors = self.embedder(np.stack(crops)) if crops else np.zeros((0, self.embedder.dim), np.float32)
        t = timings.add("embed", t)
        objects = []
        for d, vec in zip(found, vectors):
            group = self.label_groups[d.label]
            matches = self._nearest(vec, k, self.types_of_group(group))
            objects.append(RoomObject(d.box, d.label, group, float(d.confidence), d.confidence >= prep.min_confidence, tuple(matches)))
        timings.add("search", t)
        products = room_ranking([[m.item.product_id for m in o.matches] for o in objects],
                                distances=[[m.distance for m in o.matches] for o in objects], order=self.room_order,
                                confidences=[o.confidence for o in objects])
        return Room(tuple(objects), tuple(products))

    def scenes_of(self, product_id: str, k: int = 10) -> list[Match]:
        """"Where is it used?": the scenes whose crops are nearest to the product's images, best crop per
        scene. Only the crops of the product's group count (a chair is looked for among the rooms'
        seating, not their rugs; ``evaluation.room.scene_distances``); scenes with none of them come
        after, nearest first, to fill ``k``. A product of no group, or of a group no crop has, is
        looked for among every crop."""
        if self.scenes is None or not len(self.scenes):
            return []
        rows = self.products.rows_of(product_id)
        if not rows:
            return []
        queries = self.products.vectors[rows]
        labels = self.labels_of_group(self.group_of_type(self.products.items[rows[0]].type))
        listed = self._best_scenes(queries, k, labels) if labels else []
        if len(listed) < k:
            seen = {m.item.scene for m in listed}
            listed += [m for m in self._best_scenes(queries, k + len(seen)) if m.item.scene not in seen][: k - len(listed)]
        return listed

    def _best_scenes(self, queries: np.ndarray, k: int, labels: Set[str] | None = None) -> list[Match]:
        """The ``k`` scenes nearest to any of ``queries`` ``float32 (Q, D)`` by their nearest crop (of
        ``labels`` only, when given), nearest first; crops fetched in rounds until k scenes are found."""
        n, fetch = len(self.scenes), 5 * k
        while True:
            best: dict[str, Match] = {}
            got = self.scenes.search(queries, min(n, fetch), labels)
            for m in (m for per in got for m in per):
                if m.item.scene not in best or m.distance < best[m.item.scene].distance:
                    best[m.item.scene] = m
            if len(best) >= k or fetch >= n or max(len(per) for per in got) < min(n, fetch):
                return sorted(best.values(), key=lambda m: m.distance)[:k]
            fetch *= 4

    def group_of_type(self, product_type: str) -> str:
        """The product group a catalog type falls in ('' = none)."""
        return next((g for g, types in self.group_types.items() if product_type in types), "")

    def labels_of_group(self, group: str) -> frozenset[str]:
        """The scene-crop labels of ``group``: the detector classes proposed as it, and its catalog types
        (a crop drawn in pairs.csv carries its product's type); empty for no group."""
        if not group:
            return frozenset()
        return frozenset(label for label, g in self.label_groups.items() if g == group) | self.group_types.get(group, frozenset())

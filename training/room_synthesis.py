"""Rooms full of catalog products with every box labelled: the training data of a product-group detector.

Each image is a room photo of the training scenes with several cut-out catalog products pasted in
(``engine.synthesis.composite.composite_many``): products are drawn group-balanced (each group as
likely as another, then a product of it), placed by their group's prior — on the wall, flat on the
floor, standing, or on top of a piece of furniture already there (a cushion on a sofa the photo
shows or one just pasted, a vase on a table) — and pasted back to front, so every box is measured on
what stays visible. Objects the photo already holds carry no label of their own: those a COCO
detector finds confidently, of a class the groups map places in a group (``from_classes``), are
labelled with that group, and so is every box drawn by hand on the photo (a ``showroom.boxes``
file: the lamps, rugs and cushions no COCO class reaches, which would otherwise be taught as
background), unless pasted products cover most of them. ``relabel_rooms`` adds hand-drawn boxes
to a dataset already written.

Written in the Ultralytics YOLO layout (``images/{train,val}``, ``labels/{train,val}`` with
``class cx cy w h`` per line, normalised; ``data.yaml``) beside a versioned manifest
(``showroom.rooms`` v1: every image's background, products, boxes, seed and the labels' sources).
Validation images are pasted into other scenes than training ones, and no held-out scene is used.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.data.detection import box_iou
from detectors.category_map import CategoryMap
from engine.data.boxes import RelativeBox, to_pixels
from engine.data.catalog import Catalog
from engine.data.detection import Detection
from engine.data.iconic import IconicTest
from engine.data.images import Box, ImageError, load_image
from engine.files import atomic_file, write_json_atomic
from engine.synthesis.composite import CompositeConfig, CompositeError, Placement, composite_many
from engine.synthesis.cutout import CutoutConfig, CutoutError
from training.manifest import read_versioned_json
from training.synthesis import iconic_products

logger = logging.getLogger(__name__)

FORMAT = "showroom.rooms"
VERSION = 1

RelBox = tuple[float, float, float, float]
WALL, FLOOR, STANDING, ON_TOP = 0, 1, 2, 3  # paste order: back to front
HAND_DUPLICATE_IOU = 0.5


@dataclass(frozen=True)
class GroupPlacement:
    """Where a group's products go in a room photo.

    layer: paste order (``WALL`` … ``ON_TOP``); boxes: relative ``(cx, cy, w, h)`` places to fit the
    product into (jittered); squash: range of the height factor (rugs lie flat); on: groups it may
    sit on, with ``on_share`` the chance to do so when one is in the room, ``on_width`` its width as
    a share of the anchor's and ``on_base`` where its bottom sits, as a share of the anchor's height
    from the anchor's top.
    """

    layer: int
    boxes: tuple[RelBox, ...]
    squash: tuple[float, float] = (1.0, 1.0)
    on: tuple[str, ...] = ()
    on_share: float = 0.0
    on_width: tuple[float, float] = (0.2, 0.4)
    on_base: tuple[float, float] = (0.05, 0.2)


TABLES = ("table", "cabinet", "shelf")
SEATS = ("sofa", "bed", "seating")
GROUP_PLACEMENT: dict[str, GroupPlacement] = {
    "lamp": GroupPlacement(WALL, ((0.5, 0.17, 0.14, 0.3), (0.3, 0.15, 0.1, 0.26), (0.72, 0.2, 0.12, 0.3), (0.14, 0.56, 0.11, 0.55),
                                  (0.86, 0.56, 0.11, 0.55), (0.3, 0.35, 0.07, 0.12)), on=TABLES, on_share=0.35, on_width=(0.15, 0.35)),
    "curtain": GroupPlacement(WALL, ((0.1, 0.45, 0.2, 0.8), (0.9, 0.45, 0.2, 0.8), (0.5, 0.4, 0.35, 0.7))),
    "frame": GroupPlacement(WALL, ((0.3, 0.3, 0.12, 0.18), (0.6, 0.3, 0.18, 0.22), (0.5, 0.35, 0.1, 0.14), (0.8, 0.3, 0.1, 0.15))),
    "mirror": GroupPlacement(WALL, ((0.3, 0.4, 0.15, 0.35), (0.7, 0.35, 0.12, 0.25), (0.5, 0.35, 0.12, 0.2))),
    "clock": GroupPlacement(WALL, ((0.5, 0.25, 0.08, 0.1), (0.3, 0.3, 0.07, 0.09), (0.7, 0.28, 0.07, 0.09))),
    "shelf": GroupPlacement(STANDING, ((0.5, 0.35, 0.3, 0.12), (0.3, 0.3, 0.25, 0.1), (0.2, 0.55, 0.25, 0.6), (0.8, 0.55, 0.25, 0.6))),
    "rug": GroupPlacement(FLOOR, ((0.5, 0.86, 0.6, 0.25), (0.4, 0.82, 0.5, 0.22), (0.6, 0.88, 0.7, 0.22)), squash=(0.3, 0.5)),
    "cabinet": GroupPlacement(STANDING, ((0.25, 0.6, 0.3, 0.5), (0.75, 0.6, 0.3, 0.5), (0.5, 0.55, 0.4, 0.7))),
    "table": GroupPlacement(STANDING, ((0.5, 0.75, 0.35, 0.25), (0.3, 0.75, 0.3, 0.25), (0.7, 0.72, 0.25, 0.25))),
    "seating": GroupPlacement(STANDING, ((0.3, 0.7, 0.18, 0.35), (0.7, 0.7, 0.18, 0.35), (0.5, 0.72, 0.15, 0.3))),
    "sofa": GroupPlacement(STANDING, ((0.5, 0.7, 0.5, 0.35), (0.35, 0.7, 0.45, 0.33))),
    "bed": GroupPlacement(STANDING, ((0.5, 0.72, 0.6, 0.4), (0.45, 0.7, 0.55, 0.45))),
    "appliance": GroupPlacement(STANDING, ((0.5, 0.5, 0.2, 0.2), (0.3, 0.55, 0.25, 0.3), (0.7, 0.3, 0.25, 0.15))),
    "sink": GroupPlacement(STANDING, ((0.5, 0.55, 0.2, 0.12),), on=("cabinet", "table"), on_share=0.6, on_width=(0.25, 0.5)),
    "cushion": GroupPlacement(ON_TOP, ((0.4, 0.62, 0.1, 0.12), (0.6, 0.64, 0.1, 0.12)), on=SEATS, on_share=0.9,
                              on_width=(0.15, 0.3), on_base=(0.3, 0.6)),
    "textile": GroupPlacement(ON_TOP, ((0.5, 0.7, 0.3, 0.2),), on=SEATS, on_share=0.9, on_width=(0.4, 0.8), on_base=(0.5, 0.9)),
    "box": GroupPlacement(ON_TOP, ((0.3, 0.85, 0.12, 0.12), (0.7, 0.85, 0.12, 0.12)), on=TABLES, on_share=0.6, on_width=(0.15, 0.35),
                          on_base=(0.1, 0.5)),
    "vase": GroupPlacement(ON_TOP, ((0.15, 0.75, 0.12, 0.3), (0.85, 0.75, 0.12, 0.3)), on=TABLES, on_share=0.7, on_width=(0.1, 0.25)),
    "tableware": GroupPlacement(ON_TOP, ((0.5, 0.6, 0.06, 0.06),), on=TABLES, on_share=0.9, on_width=(0.08, 0.2)),
    "toy": GroupPlacement(ON_TOP, ((0.4, 0.85, 0.1, 0.12), (0.6, 0.85, 0.12, 0.14)), on=("bed", "seating", "shelf"), on_share=0.4,
                          on_width=(0.15, 0.3), on_base=(0.2, 0.5)),
    "decor": GroupPlacement(ON_TOP, ((0.5, 0.6, 0.05, 0.08),), on=TABLES, on_share=0.9, on_width=(0.08, 0.2)),
}
DEFAULT_PLACEMENT = GroupPlacement(STANDING, ((0.3, 0.7, 0.28, 0.34), (0.5, 0.72, 0.3, 0.36), (0.7, 0.7, 0.28, 0.34)))


class RoomsManifestError(ValueError):
    """A rooms dataset manifest that cannot be read."""


@dataclass(frozen=True)
class RoomSynthesisConfig:
    """train_images / val_images: composites made for each split; products: how many products one
    image holds (inclusive range); max_side: images are written with this longer side (the
    detector's input size); pseudo_confidence: COCO detections in a background at least this
    confident become labels (of their class's group); min_uncovered: such a label is dropped when
    pasted products leave less than this share of it uncovered; cutout_side: cut-outs are scaled
    down to this longer side first; seed: every image's randomness derives from it and the image's
    number."""

    train_images: int = 3000
    val_images: int = 300
    products: tuple[int, int] = (3, 7)
    max_side: int = 640
    pseudo_confidence: float = 0.35
    min_uncovered: float = 0.5
    cutout_side: int = 400
    jpeg_quality: int = 90
    seed: int = 0
    iconic: IconicTest = field(default_factory=IconicTest)
    cutout: CutoutConfig = field(default_factory=CutoutConfig)
    composite: CompositeConfig = field(default_factory=lambda: CompositeConfig(occlusion_prob=0.0, edge_prob=0.05, min_visible=0.4,
                                                                                 scale_jitter=(0.8, 1.2)))

    def __post_init__(self) -> None:
        if self.train_images < 1 or self.val_images < 0:
            raise ValueError(f"train_images must be >= 1 and val_images >= 0, got {self.train_images}, {self.val_images}")
        if not 1 <= self.products[0] <= self.products[1]:
            raise ValueError(f"products must be a range (low, high) with 1 <= low <= high, got {self.products}")
        if self.max_side < 64 or self.cutout_side < 32:
            raise ValueError(f"max_side must be >= 64 and cutout_side >= 32, got {self.max_side}, {self.cutout_side}")
        for name in ("pseudo_confidence", "min_uncovered"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class Label:
    """One box of an image: ``group``, pixel ``box``, ``source`` ('pasted' with its product id, or
    'detected' with the detector's class and confidence)."""

    group: str
    box: Box
    source: str
    product_id: str = ""
    confidence: float = 1.0


@dataclass(frozen=True)
class RoomImage:
    """One written image: ``image`` relative to the dataset folder, ``split``, its ``background`` scene,
    ``size`` (width, height), ``seed`` and ``labels``."""

    image: str
    split: str
    background: str
    size: tuple[int, int]
    seed: int
    labels: tuple[Label, ...]


@dataclass(frozen=True)
class _Product:
    product_id: str
    group: str
    image: str


class _Maker:
    """Makes images (in a worker process: backgrounds and cut-outs are decoded once per worker)."""

    def __init__(self, backgrounds: Mapping[str, str], detections: Mapping[str, Sequence[Label]], pool: Mapping[str, Sequence[_Product]],
                 groups: Sequence[str], cfg: RoomSynthesisConfig, out: Path) -> None:
        self.backgrounds, self.detections, self.pool, self.cfg, self.out = dict(backgrounds), dict(detections), dict(pool), cfg, out
        self.groups = [g for g in groups if self.pool.get(g)]
        self._scenes: dict[str, tuple[np.ndarray, float]] = {}
        self._cutouts: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def background(self, name: str) -> tuple[np.ndarray, float]:
        """The scene scaled to ``max_side`` and the scale applied (decoded once per worker)."""
        if name not in self._scenes:
            self._scenes[name] = self._background(name)
        return self._scenes[name]

    def cutout(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """A product photo scaled to ``cutout_side`` and its alpha (made once per worker; CutoutError, ImageError)."""
        if path not in self._cutouts:
            if len(self._cutouts) >= 512:
                self._cutouts.pop(next(iter(self._cutouts)))
            self._cutouts[path] = self._cutout(path)
        return self._cutouts[path]

    def _background(self, name: str) -> tuple[np.ndarray, float]:
        image = load_image(self.backgrounds[name])
        scale = self.cfg.max_side / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        return image, min(scale, 1.0)

    def _cutout(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        image = load_image(path)
        scale = self.cfg.cutout_side / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        return image, self.cfg.cutout.mask(image)

    def make(self, job: tuple[str, int, str]) -> RoomImage | None:
        """Image ``number`` of ``split`` pasted into ``background`` (None when nothing could be pasted)."""
        split, number, name = job
        seed = int.from_bytes(hashlib.sha256(f"{self.cfg.seed}|{split}|{number}".encode()).digest()[:4], "little")
        rng = np.random.default_rng(seed)
        scene, scale = self.background(name)
        h, w = scene.shape[:2]
        present = [replace(d, box=_scaled(d.box, scale, w, h)) for d in self.detections.get(name, ())]
        picks = self._pick_products(rng)
        placements, products = self._place(picks, present, w, h, rng)
        if not placements:
            return None
        made = composite_many(scene, placements, rng, self.cfg.composite, keep=[d.box for d in present])
        labels = [d for d, kept in zip(present, made.kept_visible) if kept >= self.cfg.min_uncovered]
        labels += [Label(p.group, box, "pasted", p.product_id) for p, box in zip(products, made.boxes) if box is not None]
        rel = f"images/{split}/{split}-{number:05d}.jpg"
        with atomic_file(self.out / rel) as tmp:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(made.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
            if not ok:
                raise OSError(f"cannot encode {rel}")
            tmp.write_bytes(buf.tobytes())
        return RoomImage(rel, split, name, (w, h), seed, tuple(labels))

    def _pick_products(self, rng: np.random.Generator) -> list[_Product]:
        n = int(rng.integers(self.cfg.products[0], self.cfg.products[1] + 1))
        picks = []
        for _ in range(n):
            group = self.groups[int(rng.integers(len(self.groups)))]
            options = self.pool[group]
            picks.append(options[int(rng.integers(len(options)))])
        return picks

    def _place(self, picks: Sequence[_Product], present: Sequence[Label], w: int, h: int,
               rng: np.random.Generator) -> tuple[list[Placement], list[_Product]]:
        """Placements back to front (by layer, then by how low in the frame) with their products."""
        planned = []
        anchors = [(d.group, d.box) for d in present]
        for p in sorted(picks, key=lambda p: GROUP_PLACEMENT.get(p.group, DEFAULT_PLACEMENT).layer):
            try:
                image, alpha = self.cutout(p.image)
            except (CutoutError, ImageError):
                continue
            spec = GROUP_PLACEMENT.get(p.group, DEFAULT_PLACEMENT)
            squash = float(rng.uniform(*spec.squash))
            aspect = alpha.shape[0] * squash / max(alpha.shape[1], 1)
            rel = _on_anchor(spec, anchors, aspect, w, h, rng) or _jittered(spec.boxes[int(rng.integers(len(spec.boxes)))], rng)
            planned.append((spec.layer, rel[1] + rel[3] / 2, Placement(image, alpha, rel, squash), p))
            if spec.layer == STANDING:
                cx, cy, bw, bh = rel
                anchors.append((p.group, (round((cx - bw / 2) * w), round((cy - bh / 2) * h), round((cx + bw / 2) * w), round((cy + bh / 2) * h))))
        planned.sort(key=lambda t: (t[0], t[1]))
        return [t[2] for t in planned], [t[3] for t in planned]


def _scaled(box: Box, scale: float, w: int, h: int) -> Box:
    x1, y1, x2, y2 = (round(v * scale) for v in box)
    return (max(0, x1), max(0, y1), min(w, x2), min(h, y2))


def _jittered(rel: RelBox, rng: np.random.Generator, scale: tuple[float, float] = (0.8, 1.25), shift: float = 0.2) -> RelBox:
    cx, cy, bw, bh = rel
    s = rng.uniform(*scale)
    bw, bh = min(1.0, bw * s), min(1.0, bh * s)
    cx = float(np.clip(cx + rng.uniform(-shift, shift) * max(bw, 0.15), bw / 2, 1 - bw / 2))
    cy = float(np.clip(cy + rng.uniform(-shift, shift) * max(bh, 0.1), bh / 2, 1 - bh / 2))
    return cx, cy, float(bw), float(bh)


def _on_anchor(spec: GroupPlacement, anchors: Sequence[tuple[str, Box]], aspect: float, w: int, h: int,
               rng: np.random.Generator) -> RelBox | None:
    """A relative box sitting on one of ``anchors`` of the groups ``spec.on`` (None: none, or not this time)."""
    options = [box for group, box in anchors if group in spec.on]
    if not options or rng.random() >= spec.on_share:
        return None
    x1, y1, x2, y2 = options[int(rng.integers(len(options)))]
    aw, ah = x2 - x1, y2 - y1
    if aw < 8 or ah < 8:
        return None
    bw = rng.uniform(*spec.on_width) * aw
    bh = min(bw * aspect, 0.9 * h)
    bottom = y1 + rng.uniform(*spec.on_base) * ah
    cx = rng.uniform(x1 + bw / 2, max(x1 + bw / 2, x2 - bw / 2))
    top = max(0.0, bottom - bh)
    bottom = min(float(h), top + bh)
    rel = (cx / w, (top + bottom) / 2 / h, bw / w, (bottom - top) / h)
    if not (0 < rel[2] <= 1 and 0 < rel[3] <= 1):
        return None
    return float(np.clip(rel[0], 0, 1)), float(np.clip(rel[1], 0, 1)), float(rel[2]), float(rel[3])


def product_pool(catalog: Catalog, groups_map: CategoryMap, test: IconicTest) -> tuple[dict[str, list[_Product]], dict[str, int]]:
    """Per group, the products (first photo each) that pass the white-background test; skip counts by reason."""
    pool: dict[str, list[_Product]] = defaultdict(list)
    skipped: defaultdict = defaultdict(int)
    for _, p in iconic_products(catalog, test, skipped):
        group = groups_map.class_for(p.type)
        if group is None:
            skipped["no_group"] += 1
        else:
            pool[group].append(_Product(p.product_id, group, str(p.image)))
    return dict(pool), dict(skipped)


def background_labels(detections: Sequence[Detection], groups_map: CategoryMap, min_confidence: float,
                      hand: Sequence[tuple[str, RelativeBox]] = (), size: tuple[int, int] | None = None) -> list[Label]:
    """What a background photo already holds, as labels in its pixels: its detections of classes the map
    places in a group, at least ``min_confidence``, then its hand-drawn boxes (``hand``: group and box
    as fractions of the photo, whose ``size`` is (width, height)) but for those a detection of the same
    group already labels (IoU >= ``HAND_DUPLICATE_IOU``: the detector's box is the tighter one)."""
    detected = [Label(groups_map.from_classes[d.label], tuple(int(v) for v in d.box), f"detected:{d.label}", confidence=float(d.confidence))
                for d in detections if d.confidence >= min_confidence and d.label in groups_map.from_classes]
    if not hand:
        return detected
    if size is None:
        raise ValueError("hand-drawn boxes need the photo's size")
    return detected + [lb for lb in hand_labels(hand, size, groups_map.groups) if not _duplicates(lb, detected)]


def hand_labels(hand: Sequence[tuple[str, RelativeBox]], size: tuple[int, int], groups: Sequence[str]) -> list[Label]:
    """Hand-drawn boxes (group, fractions of the photo) as labels (source ``hand``) in the pixels of a
    ``size`` = (width, height) image; a group the map does not have is an error (a typo in the file)."""
    unknown = sorted({g for g, _ in hand} - set(groups))
    if unknown:
        raise ValueError(f"hand-drawn boxes of groups the groups map does not have: {unknown} (groups: {', '.join(groups)})")
    return [Label(g, to_pixels(box, *size), "hand") for g, box in hand]


def _duplicates(label: Label, others: Sequence[Label]) -> bool:
    return any(o.group == label.group and box_iou(o.box, label.box) >= HAND_DUPLICATE_IOU for o in others)


def relabel_rooms(images: Sequence[RoomImage], hand: Mapping[str, Sequence[tuple[str, RelativeBox]]], groups: Sequence[str],
                  min_uncovered: float) -> list[RoomImage]:
    """Written rooms with their backgrounds' hand-drawn boxes added to the labels, without painting them again.

    A background's box (fractions of the photo: the image is the photo scaled) is added unless a
    detection of its group already labels it, or the pasted products' boxes leave less than
    ``min_uncovered`` of it uncovered (boxes, not the products' outlines: a little stricter than
    synthesis, which measures what stays visible). Earlier hand labels are replaced, so relabelling
    again with a corrected file gives the same result as once."""
    out = []
    for im in images:
        kept = [lb for lb in im.labels if lb.source != "hand"]
        boxes = hand.get(im.background, ())
        if boxes:
            w, h = im.size
            pasted = np.zeros((h, w), bool)
            for lb in kept:
                if lb.source == "pasted":
                    x1, y1, x2, y2 = lb.box
                    pasted[y1:y2, x1:x2] = True
            detected = [lb for lb in kept if lb.source != "pasted"]
            for lb in hand_labels(boxes, (w, h), groups):
                x1, y1, x2, y2 = lb.box
                area = (x2 - x1) * (y2 - y1)
                if area <= 0 or _duplicates(lb, detected):
                    continue
                if 1 - pasted[y1:y2, x1:x2].sum() / area >= min_uncovered:
                    kept.append(lb)
        out.append(replace(im, labels=tuple(kept)))
    return out


_WORKER: _Maker | None = None


def _init_worker(maker: _Maker) -> None:
    global _WORKER  # one maker per worker process: its decoded backgrounds and cut-outs are reused
    _WORKER = maker
    cv2.setNumThreads(1)


def _run(job: tuple[str, int, str]) -> RoomImage | None:
    assert _WORKER is not None
    return _WORKER.make(job)


def synthesize_rooms(catalog: Catalog, splits: Mapping[str, Sequence[str]], detections: Mapping[str, Sequence[Detection]],
                     groups_map: CategoryMap, cfg: RoomSynthesisConfig, out: Path, *, workers: int = 0,
                     progress: Callable | None = None,
                     hand: Mapping[str, Sequence[tuple[str, RelativeBox]]] | None = None) -> tuple[list[RoomImage], dict[str, Any]]:
    """Write ``cfg.train_images`` / ``cfg.val_images`` composites into ``out`` (YOLO layout) and return
    them with stats. ``splits``: 'train' and 'val' background scene names (disjoint);
    ``detections``: each background's detections by a COCO detector, and ``hand``: its hand-drawn
    boxes (group, fractions of the photo): labels of what the photo holds (``background_labels``)."""
    if not splits.get("train"):
        raise ValueError("room synthesis needs training background scenes")
    if set(splits.get("train", ())) & set(splits.get("val", ())):
        raise ValueError("training and validation backgrounds must be different scenes")
    if not groups_map.groups:
        raise ValueError(f"{groups_map.source} has no 'groups': room synthesis needs the product-groups map")
    pool, skipped = product_pool(catalog, groups_map, cfg.iconic)
    images = {s.scene: str(s.image) for s in catalog.scenes}
    names = [n for split in splits.values() for n in split]
    sizes = {s.scene: s.size for s in catalog.scenes}
    hand = hand or {}
    labels = {n: background_labels(detections.get(n, ()), groups_map, cfg.pseudo_confidence, hand.get(n, ()), sizes[n]) for n in names}
    maker = _Maker({n: images[n] for n in names}, labels, pool, groups_map.groups, cfg, Path(out))
    jobs = []
    for split, count in (("train", cfg.train_images), ("val", cfg.val_images)):
        scenes = sorted(splits.get(split, ()))
        jobs += [(split, i, scenes[i % len(scenes)]) for i in range(count if scenes else 0)]
    made = _map(maker, jobs, workers or os.cpu_count() or 1, progress)
    written = [m for m in made if m is not None]
    write_yolo_labels(written, groups_map.groups, Path(out))
    return written, dataset_stats(written, pool, skipped, groups_map.groups)


def _map(maker: _Maker, jobs: list, workers: int, progress: Callable | None) -> list[RoomImage | None]:
    if workers == 1:
        _init_worker(maker)
        results = map(_run, jobs)
        return list(progress(results, total=len(jobs)) if progress else results)
    # spawn, not fork: the parent may hold TensorFlow / TFLite threads, which a forked child deadlocks on
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(maker,)) as pool:
        results = pool.map(_run, jobs, chunksize=4)
        return list(progress(results, total=len(jobs)) if progress else results)


def write_real_split(catalog: Catalog, scenes: Sequence[str], detections: Mapping[str, Sequence[Detection]], groups_map: CategoryMap,
                     out: Path, *, max_side: int, min_confidence: float, split: str = "test",
                     hand: Mapping[str, Sequence[tuple[str, RelativeBox]]] | None = None) -> list[RoomImage]:
    """The room photos ``scenes`` as they are (scaled to ``max_side``), labelled with their confident
    detections of a class the map places in a group and their hand-drawn boxes (``background_labels``):
    real boxes to measure a detector on (of the groups a COCO detector reaches, and of every group on
    the scenes drawn by hand). Written as split ``split``."""
    made = []
    wanted = set(scenes)
    for scene in catalog.scenes:
        if scene.scene not in wanted:
            continue
        try:
            image = load_image(scene.image)
        except ImageError as exc:
            logger.warning("real split skips %s: %s", scene.scene, exc)
            continue
        size = (image.shape[1], image.shape[0])
        scale = min(1.0, max_side / max(image.shape[:2]))
        if scale < 1:
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        found = background_labels(detections.get(scene.scene, ()), groups_map, min_confidence, (hand or {}).get(scene.scene, ()), size)
        labels = tuple(replace(lb, box=_scaled(lb.box, scale, w, h)) for lb in found)
        rel = f"images/{split}/{split}-{len(made):05d}.jpg"
        with atomic_file(out / rel) as tmp:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise OSError(f"cannot encode {rel}")
            tmp.write_bytes(buf.tobytes())
        made.append(RoomImage(rel, split, scene.scene, (w, h), 0, labels))
    return made


def write_yolo_labels(images: Sequence[RoomImage], groups: Sequence[str], out: Path) -> Path:
    """``labels/<split>/<name>.txt`` per image (``class cx cy w h``, normalised) and ``data.yaml``; its path."""
    index = {g: i for i, g in enumerate(groups)}
    for im in images:
        w, h = im.size
        lines = [f"{index[lb.group]} {(lb.box[0] + lb.box[2]) / 2 / w:.6f} {(lb.box[1] + lb.box[3]) / 2 / h:.6f} "
                 f"{(lb.box[2] - lb.box[0]) / w:.6f} {(lb.box[3] - lb.box[1]) / h:.6f}" for lb in im.labels if lb.box[2] > lb.box[0] and lb.box[3] > lb.box[1]]
        path = out / "labels" / im.split / (Path(im.image).stem + ".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in lines))
    names = "".join(f"  {i}: {g}\n" for i, g in enumerate(groups))
    data = out / "data.yaml"
    test = "test: images/test\n" if any(im.split == "test" for im in images) or (out / "images" / "test").is_dir() else ""
    data.write_text(f"# written by python -m training.synthesize_rooms\npath: {out.resolve()}\ntrain: images/train\nval: images/val\n{test}names:\n{names}")
    return data


def dataset_stats(images: Sequence[RoomImage], pool: Mapping[str, Sequence[_Product]], skipped: Mapping[str, int],
                  groups: Sequence[str]) -> dict[str, Any]:
    """Images and boxes per split, boxes per group split by source (pasted / detected / hand), products per group."""
    stats: dict[str, Any] = {"skipped_products": dict(skipped), "products_per_group": {g: len(pool.get(g, ())) for g in groups}}
    for split in ("train", "val", "test"):
        ims = [im for im in images if im.split == split]
        pasted = Counter(lb.group for im in ims for lb in im.labels if lb.source == "pasted")
        detected = Counter(lb.group for im in ims for lb in im.labels if lb.source.startswith("detected"))
        drawn = Counter(lb.group for im in ims for lb in im.labels if lb.source == "hand")
        stats[split] = {"images": len(ims), "backgrounds": len({im.background for im in ims}),
                        "boxes_pasted": sum(pasted.values()), "boxes_detected": sum(detected.values()), "boxes_hand": sum(drawn.values()),
                        "per_group": {g: {"pasted": pasted[g], "detected": detected[g], "hand": drawn[g]} for g in groups}}
    return stats


def save_rooms_manifest(path: Path, images: Sequence[RoomImage], producer: Mapping[str, Any], stats: Mapping[str, Any]) -> Path:
    data = {"format": FORMAT, "version": VERSION, "producer": dict(producer), "stats": dict(stats),
            "images": [{**asdict(im), "labels": [asdict(lb) for lb in im.labels]} for im in images]}
    return write_json_atomic(path, data)


def load_rooms_manifest(path: Path) -> tuple[list[RoomImage], dict[str, Any], dict[str, Any]]:
    """(images, producer, stats) of a rooms dataset manifest."""
    data = read_versioned_json(Path(path), FORMAT, VERSION, RoomsManifestError, "rooms dataset manifest", "python -m training.synthesize_rooms")
    try:
        images = [RoomImage(im["image"], im["split"], im["background"], tuple(im["size"]), im["seed"],
                            tuple(Label(lb["group"], tuple(lb["box"]), lb["source"], lb.get("product_id", ""), lb.get("confidence", 1.0))
                                  for lb in im["labels"])) for im in data["images"]]
    except (TypeError, KeyError) as exc:
        raise RoomsManifestError(f"{path}: an image entry is malformed ({exc}); synthesize the rooms again") from None
    return images, data.get("producer", {}), data.get("stats", {})

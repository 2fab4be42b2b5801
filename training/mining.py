"""Mining positives from raw catalog photos: white-background test, detector filter, crop choice.

For each (product, scene) pair of ``pairs.csv``:
- a pair with a box keeps it (``catalog_box``);
- otherwise the scene's detections of the class the product's type maps to (category map) are
  kept if confident and large enough; among several, the crop most similar to the product's
  iconic image under the current embedder wins (``detector``); with none the pair is dropped and
  the reason counted: ``unreachable_type``, ``no_detection_of_class``, ``below_confidence``,
  ``too_small`` or ``scene_unreadable``.
Product images that fail the white-background test become extra queries of their own product
(``product_lifestyle``). Negatives are sampled per positive, in-class and out-of-class.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detectors.base import Detection, Detector
from detectors.cache import DetectionCache  # noqa: F401  (re-exported: mining callers build one)
from detectors.category_map import CategoryMap
from engine.catalog import Catalog
from engine.iconic import IconicTest
from engine.images import ImageError, load_image, query_crop, to_square
from training.manifest import Positive
from training.triplets import TripletSampler

logger = logging.getLogger(__name__)

DROP_REASONS = ("unreachable_type", "no_detection_of_class", "below_confidence", "too_small", "scene_unreadable")
Embed = Callable[[np.ndarray], np.ndarray]  # uint8 (N, S, S, 3) -> float32 (N, D)


@dataclass(frozen=True)
class MiningConfig:
    """min_confidence: detector score a crop needs; min_area: crop area / scene area;
    crop_padding: padding around a crop as a fraction of its longer side (Bell & Bala: 16 px per 256)."""

    min_confidence: float = 0.3
    min_area: float = 0.01
    crop_padding: float = 0.0625
    in_class_negatives: int = 10
    out_class_negatives: int = 2
    seed: int = 1234
    iconic: IconicTest = field(default_factory=IconicTest)

    def __post_init__(self) -> None:
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if not 0 <= self.min_area < 1:
            raise ValueError(f"min_area must be in [0, 1), got {self.min_area}")
        if not 0 <= self.crop_padding <= 1:
            raise ValueError(f"crop_padding must be in [0, 1], got {self.crop_padding}")


@dataclass
class MiningResult:
    positives: list[Positive]
    stats: dict[str, dict[str, int]]  # type -> counts (pairs, reachable, kept, dropped reasons)
    iconic: dict[str, object]  # white-background test summary
    samples: list[tuple[np.ndarray, np.ndarray, str]]  # (crop, iconic image, caption) for a contact sheet


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def iconic_report(catalog: Catalog, test: IconicTest) -> dict[str, object]:
    """Run the white-background test on every product and scene image."""
    unreadable: list[str] = []

    def flag(path: Path) -> bool | None:
        try:
            return test.is_iconic(load_image(path))
        except ImageError as exc:
            logger.warning("white-background test skips %s: %s", path, exc)
            unreadable.append(_rel(path, catalog.root))
            return None

    product_flags = {p.image: f for p in catalog.products if (f := flag(p.image)) is not None}
    scene_flags = {s.image: f for s in catalog.scenes if (f := flag(s.image)) is not None}
    n_p, n_s = len(product_flags), len(scene_flags)
    return {
        "products": n_p,
        "products_iconic": sum(product_flags.values()),
        "products_iconic_share": sum(product_flags.values()) / n_p if n_p else float("nan"),
        "scenes": n_s,
        "scenes_lifestyle": n_s - sum(scene_flags.values()),
        "scenes_lifestyle_share": (n_s - sum(scene_flags.values())) / n_s if n_s else float("nan"),
        "products_judged_lifestyle": sorted(_rel(k, catalog.root) for k, v in product_flags.items() if not v),
        "scenes_judged_iconic": sorted(_rel(k, catalog.root) for k, v in scene_flags.items() if v),
        "unreadable": sorted(unreadable),
    }


def mine_positives(
    catalog: Catalog,
    detector: Detector,
    category_map: CategoryMap,
    cfg: MiningConfig,
    *,
    embed: Embed | None = None,
    image_size: int = 128,
    cache: DetectionCache | None = None,
    sample_count: int = 24,
) -> MiningResult:
    """Mine positives (and their negatives) from a catalog; see the module docstring."""
    category_map.check_classes(detector.class_names)
    cache = cache or DetectionCache(detector, None)
    rng = np.random.default_rng(cfg.seed)
    stats: dict[str, Counter] = defaultdict(Counter)
    positives: list[Positive] = []
    samples: list[tuple[np.ndarray, np.ndarray, str]] = []
    iconic_cache: dict[str, np.ndarray] = {}
    iconic_emb: dict[str, np.ndarray] = {}

    def iconic_of(pid: str) -> np.ndarray:
        if pid not in iconic_cache:
            iconic_cache[pid] = to_square(load_image(catalog.images_of(pid)[0].image), image_size)
        return iconic_cache[pid]

    report = iconic_report(catalog, cfg.iconic)
    lifestyle_products = set(report["products_judged_lifestyle"])
    for p in catalog.products:
        if _rel(p.image, catalog.root) in lifestyle_products:
            positives.append(Positive(p.product_id, p.type, None, _rel(p.image, catalog.root), None, "product_lifestyle"))

    by_scene: dict[str, list] = defaultdict(list)
    for pair in catalog.pairs:
        by_scene[pair.scene].append(pair)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x
    for scene_name, pairs in tqdm(sorted(by_scene.items()), desc="mining scenes", unit="scene"):
        scene = catalog.scene(scene_name)
        try:
            image = load_image(scene.image)
        except ImageError as exc:
            logger.warning("skipping scene %s: %s", scene_name, exc)
            for pair in pairs:
                stats[catalog.product_type(pair.product_id)].update(pairs=1, scene_unreadable=1)
            continue
        h, w = image.shape[:2]
        detections: list[Detection] | None = None
        for pair in pairs:
            ptype = catalog.product_type(pair.product_id)
            st = stats[ptype]
            st["pairs"] += 1
            if pair.box is not None:
                st.update(reachable=1, kept=1)
                positives.append(Positive(pair.product_id, ptype, scene_name, _rel(scene.image, catalog.root), pair.box, "catalog_box"))
                continue
            cls = category_map.class_for(ptype)
            if cls is None:
                st["unreachable_type"] += 1
                continue
            st["reachable"] += 1
            if detections is None:
                detections = cache.detect(scene.image, image)
            cands = [d for d in detections if d.label == cls]
            if not cands:
                st["no_detection_of_class"] += 1
                continue
            cands = [d for d in cands if d.confidence >= cfg.min_confidence]
            if not cands:
                st["below_confidence"] += 1
                continue
            cands = [d for d in cands if d.area >= cfg.min_area * w * h]
            if not cands:
                st["too_small"] += 1
                continue
            crops = np.stack([query_crop(image, d.box, image_size, cfg.crop_padding) for d in cands])
            similarity = 0.0
            best = 0  # highest confidence first
            if embed is not None and len(cands) > 1:
                key = pair.product_id
                if key not in iconic_emb:
                    iconic_emb[key] = embed(iconic_of(key)[None])[0]
                q = embed(crops)
                ref = iconic_emb[key]
                sims = (q @ ref) / (np.linalg.norm(q, axis=1) * np.linalg.norm(ref) + 1e-12)
                best = int(np.argmax(sims))
                similarity = float(sims[best])
            d = cands[best]
            st["kept"] += 1
            positives.append(Positive(pair.product_id, ptype, scene_name, _rel(scene.image, catalog.root), d.box, "detector",
                                      d.label, round(d.confidence, 4), round(similarity, 4)))
            if len(samples) < sample_count * 4:
                samples.append((crops[best], iconic_of(pair.product_id), f"{ptype[:14]} {d.label} {d.confidence:.2f}"))

    positives = attach_negatives(positives, catalog, cfg, rng)
    keep = rng.permutation(len(samples))[:sample_count] if samples else []
    return MiningResult(positives, {t: dict(c) for t, c in sorted(stats.items())}, report, [samples[i] for i in sorted(keep)])


def attach_negatives(positives: list[Positive], catalog: Catalog, cfg: MiningConfig, rng: np.random.Generator) -> list[Positive]:
    """Give each positive ``in_class_negatives`` + ``out_class_negatives`` random negative products."""
    images = {pid: [0] for pid in catalog.product_ids}  # the sampler only needs product ids here
    sampler = TripletSampler([], images, catalog.types, in_class=cfg.in_class_negatives, out_class=cfg.out_class_negatives)
    out = []
    for p in positives:
        same, other = sampler.negatives_for(p.product_id, rng)
        out.append(Positive(**{**p.__dict__, "negatives": tuple(same + other),
                               "negative_kinds": tuple(["in_class"] * len(same) + ["out_class"] * len(other))}))
    return out


def totals(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    """Sum the per-type mining counts."""
    total: Counter = Counter()
    for c in stats.values():
        total.update(c)
    return {k: total.get(k, 0) for k in ("pairs", "reachable", "kept", *DROP_REASONS)}


def contact_sheet(samples: list[tuple[np.ndarray, np.ndarray, str]], columns: int = 4) -> np.ndarray:
    """Mined crops beside their products' iconic images, ``uint8 (H, W, 3)``."""
    import cv2

    if not samples:
        return np.full((40, 200, 3), 255, np.uint8)
    s = samples[0][0].shape[0]
    label_h = 16
    rows = -(-len(samples) // columns)
    sheet = np.full((rows * (s + label_h), columns * 2 * s, 3), 255, np.uint8)
    for i, (crop, icon, caption) in enumerate(samples):
        r, c = divmod(i, columns)
        y, x = r * (s + label_h), c * 2 * s
        sheet[y + label_h : y + label_h + s, x : x + s] = crop
        sheet[y + label_h : y + label_h + s, x + s : x + 2 * s] = icon
        cv2.putText(sheet, caption[:30], (x + 2, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet

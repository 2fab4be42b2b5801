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

import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from detectors.cache import DetectionCache
from detectors.category_map import CategoryMap
from engine.data.catalog import Catalog
from engine.config import DEFAULT_CROP_PADDING, DEFAULT_FILL_CONFIDENCE, DEFAULT_MIN_CONFIDENCE, Preprocessing, detector_floor
from engine.data.detection import Detector
from engine.data.iconic import IconicTest
from engine.data.images import ImageError, load_image, load_square, query_crop
from engine.data.proposals import SceneProposals, catalog_proposals, confident
from engine.data.splits import restrict_scenes
from training.manifest import Manifest, Positive
from training.triplets import NegativeSampler

if TYPE_CHECKING:  # annotations only: importing the embedder loads TensorFlow
    from engine.model.embedder import Embed, Embedder

logger = logging.getLogger(__name__)

DROP_REASONS = ("unreachable_type", "no_detection_of_class", "below_confidence", "too_small", "scene_unreadable")


@dataclass(frozen=True)
class MiningConfig:
    """min_confidence: detector score a crop needs; fill_confidence: a mapped class with no such crop
    in a scene may use its best one down to this score (``engine.data.proposals.confident``); min_area:
    crop area / scene area;
    crop_padding: padding around a crop as a fraction of its longer side (Bell & Bala: 16 px per 256)."""

    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    fill_confidence: float = DEFAULT_FILL_CONFIDENCE
    min_area: float = 0.01
    crop_padding: float = DEFAULT_CROP_PADDING
    in_class_negatives: int = 10
    out_class_negatives: int = 2
    seed: int = 1234
    iconic: IconicTest = field(default_factory=IconicTest)

    def __post_init__(self) -> None:
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if not 0 <= self.fill_confidence <= 1:
            raise ValueError(f"fill_confidence must be in [0, 1], got {self.fill_confidence}")
        if not 0 <= self.min_area < 1:
            raise ValueError(f"min_area must be in [0, 1), got {self.min_area}")
        if not 0 <= self.crop_padding <= 1:
            raise ValueError(f"crop_padding must be in [0, 1], got {self.crop_padding}")

    @property
    def detector_confidence(self) -> float:
        """The lowest score the detector must report for mining."""
        return detector_floor(self.min_confidence, self.fill_confidence)


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
    """Mine positives (and their negatives) from a catalog; see the module docstring.

    ``embed`` (uint8 (N, S, S, 3) → float (N, D), S = ``image_size``) chooses among several
    detections of a pair's class; without it the most confident one is kept.
    """
    category_map.check_classes(detector.class_names)
    cache = cache or DetectionCache(detector, None)
    rng = np.random.default_rng(cfg.seed)
    report = iconic_report(catalog, cfg.iconic)
    miner = _SceneMiner(catalog, category_map, cfg, embed, image_size, sample_count * 4)
    positives = _lifestyle_positives(catalog, report)
    with_pairs = sorted({p.scene for p in catalog.pairs})
    scenes = replace(catalog, scenes=tuple(catalog.scene(name) for name in with_pairs), _types=catalog.types)
    prep = Preprocessing(image_size=image_size, crop_padding=cfg.crop_padding, min_confidence=cfg.min_confidence,
                         fill_confidence=cfg.fill_confidence)
    proposals = catalog_proposals(scenes, cache.detect, prep, category_map.classes)
    for proposal in tqdm(proposals, total=len(with_pairs), desc="mining scenes", unit="scene"):
        positives += miner.mine(proposal)
    positives = attach_negatives(positives, catalog, cfg, rng)
    keep = rng.permutation(len(miner.samples))[:sample_count] if miner.samples else []
    return MiningResult(positives, {t: dict(c) for t, c in sorted(miner.stats.items())}, report, [miner.samples[i] for i in sorted(keep)])


def _lifestyle_positives(catalog: Catalog, report: dict[str, object]) -> list[Positive]:
    """Product images judged not iconic become queries of their own product."""
    lifestyle = set(report["products_judged_lifestyle"])
    return [Positive(p.product_id, p.type, None, _rel(p.image, catalog.root), None, "product_lifestyle")
            for p in catalog.products if _rel(p.image, catalog.root) in lifestyle]


class _SceneMiner:
    """Turns one scene's proposals into positives, counting per type why pairs were dropped."""

    def __init__(self, catalog: Catalog, category_map: CategoryMap, cfg: MiningConfig, embed: Embed | None,
                 image_size: int, max_samples: int) -> None:
        self.catalog, self.category_map, self.cfg = catalog, category_map, cfg
        self.embed, self.image_size, self.max_samples = embed, image_size, max_samples
        self.stats: dict[str, Counter] = defaultdict(Counter)
        self.samples: list[tuple[np.ndarray, np.ndarray, str]] = []
        self._iconic: dict[str, np.ndarray] = {}
        self._iconic_emb: dict[str, np.ndarray] = {}

    def iconic_of(self, pid: str) -> np.ndarray:
        if pid not in self._iconic:
            self._iconic[pid] = load_square(self.catalog.images_of(pid)[0].image, self.image_size)
        return self._iconic[pid]

    def mine(self, proposal: SceneProposals) -> list[Positive]:
        scene = proposal.scene
        rel = _rel(scene.image, self.catalog.root)
        out = []
        for pair in proposal.pairs:
            ptype = self.catalog.product_type(pair.product_id)
            st = self.stats[ptype]
            st["pairs"] += 1
            if proposal.image is None:
                st["scene_unreadable"] += 1
            elif pair.box is not None:
                st.update(reachable=1, kept=1)
                out.append(Positive(pair.product_id, ptype, scene.scene, rel, pair.box, "catalog_box"))
            elif (cls := self.category_map.class_for(ptype)) is None:
                st["unreachable_type"] += 1
            else:
                st["reachable"] += 1
                positive = self._detected(pair.product_id, ptype, cls, proposal, rel)
                if positive is not None:
                    st["kept"] += 1
                    out.append(positive)
        return out

    def _detected(self, pid: str, ptype: str, cls: str, proposal: SceneProposals, rel: str) -> Positive | None:
        """The best confident, large-enough detection of ``cls`` for product ``pid``, or None (reason counted)."""
        st = self.stats[ptype]
        h, w = proposal.image.shape[:2]
        if not any(d.label == cls for d in proposal.detections):
            st["no_detection_of_class"] += 1
            return None
        chosen = confident(proposal.detections, self.cfg.min_confidence, self.cfg.fill_confidence, self.category_map.classes)
        cands = [d for d in chosen if d.label == cls]
        if not cands:
            st["below_confidence"] += 1
            return None
        cands = [d for d in cands if d.area >= self.cfg.min_area * w * h]
        if not cands:
            st["too_small"] += 1
            return None
        crops = np.stack([query_crop(proposal.image, d.box, self.image_size, self.cfg.crop_padding) for d in cands])
        best, similarity = self._most_similar(pid, crops)
        d = cands[best]
        if len(self.samples) < self.max_samples:
            self.samples.append((crops[best], self.iconic_of(pid), f"{ptype[:14]} {d.label} {d.confidence:.2f}"))
        return Positive(pid, ptype, proposal.scene.scene, rel, d.box, "detector", d.label, round(d.confidence, 4), round(similarity, 4))

    def _most_similar(self, pid: str, crops: np.ndarray) -> tuple[int, float]:
        """(index, cosine similarity) of the crop closest to the product's iconic image; the first
        (most confident) with similarity 0 when there is one crop or no embedding."""
        if self.embed is None or len(crops) == 1:
            return 0, 0.0
        if pid not in self._iconic_emb:
            self._iconic_emb[pid] = self.embed(self.iconic_of(pid)[None])[0]
        q, ref = self.embed(crops), self._iconic_emb[pid]
        sims = (q @ ref) / (np.linalg.norm(q, axis=1) * np.linalg.norm(ref) + 1e-12)
        best = int(np.argmax(sims))
        return best, float(sims[best])


def attach_negatives(positives: list[Positive], catalog: Catalog, cfg: MiningConfig, rng: np.random.Generator) -> list[Positive]:
    """Give each positive ``in_class_negatives`` + ``out_class_negatives`` random negative products."""
    sampler = NegativeSampler(catalog.types)
    out = []
    for p in positives:
        same, other = sampler.draw(p.product_id, rng, cfg.in_class_negatives, cfg.out_class_negatives)
        out.append(replace(p, negatives=tuple(same + other), negative_kinds=tuple(["in_class"] * len(same) + ["out_class"] * len(other))))
    return out


def totals(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    """Sum the per-type mining counts."""
    total: Counter = Counter()
    for c in stats.values():
        total.update(c)
    return {k: total.get(k, 0) for k in ("pairs", "reachable", "kept", *DROP_REASONS)}


def contact_sheet(samples: list[tuple[np.ndarray, np.ndarray, str]], columns: int = 4) -> np.ndarray:
    """Mined crops beside their products' iconic images, ``uint8 (H, W, 3)``."""
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


def mine_catalog(
    catalog: Catalog,
    detector: Detector,
    category_map: CategoryMap,
    cfg: MiningConfig,
    *,
    embedder: Embedder | None,
    cache_dir: Path | None,
    holdout: Sequence[str] = (),
) -> tuple[Manifest, MiningResult]:
    """Mine ``catalog`` without its ``holdout`` scenes into a versioned manifest (not yet saved).

    ``embedder`` chooses among several detections of a pair's class (None: the most confident);
    detections are cached under ``cache_dir`` (None: not cached).
    """
    t0 = time.perf_counter()
    if holdout:
        catalog = restrict_scenes(catalog, drop=holdout)
        logger.info("holding out %d scenes: their pairs are not mined", len(holdout))
    result = mine_positives(catalog, detector, category_map, cfg, embed=embedder, image_size=embedder.size if embedder else 128,
                            cache=DetectionCache(detector, cache_dir))
    seconds = time.perf_counter() - t0
    manifest = Manifest(
        catalog=str(catalog.root), catalog_fingerprint=catalog.fingerprint, positives=result.positives,
        producer={"tool": "training.mine_triplets", "detector": detector.fingerprint, "category_map": category_map.source,
                  "category_map_version": category_map.version, "model": embedder.name if embedder else "none",
                  "config": json.loads(json.dumps(cfg, default=lambda o: o.__dict__)), "holdout_scenes": list(holdout)},
        stats={"per_type": result.stats, "totals": totals(result.stats), "iconic": dict(result.iconic), "seconds": seconds},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return manifest, result

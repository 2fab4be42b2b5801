"""Synthetic in-room views of every catalog product, and their versioned manifest.

Each product photo that passes the white-background test is cut out (``engine.synthesis.cutout``) and pasted
into room photos of the training scenes (``engine.synthesis.composite``): at a place and size drawn from the
real detections of the class its type maps to (a floor-standing default otherwise), warped,
re-lit, shadowed, sometimes partly hidden by another cut-out or the frame edge, blurred and
JPEG-compressed. A view is cached on disk as the region around the product (its box grown by
``context`` of its longer side on every side), so training crops it with its own padding exactly
as it crops a real detection.

Manifest (JSON)::

    {"format": "showroom.synthetic", "version": 1, "catalog", "catalog_fingerprint", "created",
     "producer": {...config, background scenes, holdout scenes...}, "stats": {...},
     "views": [{"product_id", "type", "background", "image" (relative to the manifest's folder),
                "box" [x1, y1, x2, y2] in that image, "seed", "params": {...}}, ...]}
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors.category_map import CategoryMap
from engine.data.catalog import Catalog, ProductImage
from engine.synthesis.composite import CompositeConfig, CompositeError, PlacementPrior, composite, to_rel_box
from engine.config import DEFAULT_MIN_CONFIDENCE
from engine.synthesis.cutout import CutoutConfig, CutoutError
from engine.files import atomic_file, file_sha256, write_json_atomic
from engine.data.iconic import IconicTest
from engine.data.images import Box, ImageError, load_image
from engine.index.views import DEFAULT_WEIGHT as VIEWS_WEIGHT, ProductView, ProductViews
from engine.data.proposals import Detect
from training.manifest import check_fits, read_versioned_json

logger = logging.getLogger(__name__)

FORMAT = "showroom.synthetic"
VERSION = 1


class SyntheticManifestError(ValueError):
    """A synthetic-views manifest that cannot be read or does not fit the catalog."""


@dataclass(frozen=True)
class SynthesisConfig:
    """views_per_product: composites made of each product; seed: every view's randomness derives
    from it, the product and the view number (so a view does not depend on the worker that made
    it); max_side: backgrounds are scaled down to this longer side first; context: the cached image
    is the product's box grown by this share of its longer side on every side; jpeg_quality of the
    cached file; min_confidence: detections that count for the placement prior."""

    views_per_product: int = 2
    seed: int = 0
    max_side: int = 1024
    context: float = 0.5
    jpeg_quality: int = 92
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    iconic: IconicTest = field(default_factory=IconicTest)
    cutout: CutoutConfig = field(default_factory=CutoutConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)

    def __post_init__(self) -> None:
        if self.views_per_product < 1:
            raise ValueError(f"views_per_product must be >= 1, got {self.views_per_product}")
        if self.max_side < 64:
            raise ValueError(f"max_side must be >= 64 pixels, got {self.max_side}")
        if not 0 <= self.context <= 2:
            raise ValueError(f"context must be in [0, 2], got {self.context}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    def describe(self) -> dict[str, Any]:
        """The whole config as plain JSON (for the manifest and MLflow)."""
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class SyntheticView:
    """One composite: ``product_id`` pasted into room photo ``background``; cached as ``image``
    (relative to the manifest's folder) with the product's visible ``box`` in it."""

    product_id: str
    type: str
    background: str
    image: str
    box: Box
    seed: int
    params: dict = field(default_factory=dict, compare=False)


@dataclass
class SyntheticManifest:
    catalog: str
    catalog_fingerprint: str
    views: list[SyntheticView]
    producer: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    folder: Path = Path(".")  # where the manifest lives; view images are relative to it

    def image_path(self, view: SyntheticView) -> Path:
        return self.folder / view.image

    @property
    def background_scenes(self) -> tuple[str, ...]:
        return tuple(self.producer.get("background_scenes", ()))


def save_synthetic_manifest(manifest: SyntheticManifest, path: Path) -> Path:
    data = {"format": FORMAT, "version": VERSION, "catalog": manifest.catalog, "catalog_fingerprint": manifest.catalog_fingerprint,
            "created": manifest.created, "producer": manifest.producer, "stats": manifest.stats,
            "views": [{**asdict(v), "box": list(v.box)} for v in manifest.views]}
    return write_json_atomic(path, data)


def load_synthetic_manifest(path: Path) -> SyntheticManifest:
    path = Path(path)
    data = read_versioned_json(path, FORMAT, VERSION, SyntheticManifestError, "synthetic-views manifest", "python -m training.synthesize")
    try:
        views = [SyntheticView(**{**v, "box": tuple(v["box"])}) for v in data["views"]]
    except (TypeError, KeyError) as exc:
        raise SyntheticManifestError(f"{path}: a view is malformed ({exc}); synthesize again") from None
    return SyntheticManifest(data["catalog"], data["catalog_fingerprint"], views, data.get("producer", {}), data.get("stats", {}),
                             data.get("created", ""), path.parent)


def synthetic_views(path: Path, catalog: Catalog, weight: float = VIEWS_WEIGHT) -> ProductViews:
    """The views of the manifest at ``path`` as ``engine.index.views.ProductViews`` (to blend into the
    catalog's vectors with ``weight``), recorded by the file's path and sha256;
    ``SyntheticManifestError`` when they were made from another catalog or name products it lacks."""
    manifest = load_synthetic_manifest(path)
    check_fits(catalog, manifest.catalog_fingerprint, (v.product_id for v in manifest.views), SyntheticManifestError,
               f"{path}: the views were made from", "synthesize them again for this catalog")
    views = tuple(ProductView(v.product_id, manifest.image_path(v), tuple(v.box), v.background) for v in manifest.views)
    return ProductViews(views, weight, str(path), file_sha256(path))


def delta_views(path: Path, rows: Sequence[ProductImage], weight: float = VIEWS_WEIGHT) -> ProductViews:
    """The views in the manifest at ``path`` of the products of ``rows`` (a catalog delta's added or
    updated rows, their ``sha256`` filled) as ``ProductViews``, recorded like ``synthetic_views``'s.

    Views of other products are left out (a whole catalog's manifest serves too). Raises
    ``SyntheticManifestError`` when none is of these products, when a view's product has another
    type than its row, or when a view was cut out of another photo than the product's first row
    (the photo was replaced since: synthesize again)."""
    manifest = load_synthetic_manifest(path)
    first: dict[str, ProductImage] = {}
    for p in rows:
        first.setdefault(p.product_id, p)
    kept = [v for v in manifest.views if v.product_id in first]
    if not kept:
        raise SyntheticManifestError(f"{path} has no view of the {len(first)} product(s) of this delta; make them with "
                                     "python -m training.synthesize --only PRODUCTS.csv")
    for v in kept:
        row = first[v.product_id]
        if v.type != row.type:
            raise SyntheticManifestError(f"{path}: product {v.product_id!r} has type {v.type!r} in its views and {row.type!r} "
                                         "in the delta: views of another product; synthesize them again")
        made_from = v.params.get("photo_sha256")
        if made_from and row.sha256 and made_from != row.sha256:
            raise SyntheticManifestError(f"{path}: the views of {v.product_id!r} were cut out of another photo than {row.image}; "
                                         "synthesize them again with python -m training.synthesize --only PRODUCTS.csv")
    views = tuple(ProductView(v.product_id, manifest.image_path(v), tuple(v.box), v.background) for v in kept)
    logger.info("%d views of %d of the delta's %d products from %s", len(views), len({v.product_id for v in kept}), len(first), path)
    return ProductViews(views, weight, str(path), file_sha256(path))


def placement_label(product_type: str, category_map: CategoryMap) -> str:
    """The key of a product's placement: its detector class, else its own type."""
    return category_map.class_for(product_type) or product_type


def placement_prior(catalog: Catalog, scenes: Sequence[str], detect: Detect | None, min_confidence: float,
                    category_map: CategoryMap) -> PlacementPrior:
    """Where things sit in ``scenes``: the relative boxes of each class's confident detections
    (when ``detect`` is given), and of each ``pairs.csv`` box (keyed by ``placement_label``)."""
    wanted = set(scenes)
    boxes: dict[str, list] = defaultdict(list)
    types = catalog.types
    for pair in catalog.pairs:
        if pair.box is not None and pair.scene in wanted:
            w, h = catalog.scene(pair.scene).size
            boxes[placement_label(types[pair.product_id], category_map)].append(to_rel_box(pair.box, w, h))
    for scene in catalog.scenes if detect is not None else ():
        if scene.scene not in wanted:
            continue
        try:
            image = load_image(scene.image)
        except ImageError as exc:
            logger.warning("placement prior skips %s: %s", scene.scene, exc)
            continue
        h, w = image.shape[:2]
        for d in detect(scene.image, image):
            if d.confidence >= min_confidence:
                boxes[d.label].append(to_rel_box(d.box, w, h))
    logger.info("placement prior from %d scenes: %s", len(wanted), {k: len(v) for k, v in sorted(boxes.items())})
    return PlacementPrior.from_boxes(boxes)


@dataclass(frozen=True)
class _Job:
    """What one worker needs to make every view of one product."""

    product_id: str
    type: str
    image: Path
    label: str  # where it may sit: ``placement_label`` (the default placement when the prior has no boxes of it)
    index: int  # the product's position in the catalog: part of every view's seed
    sha256: str = ""  # of the photo cut out (recorded with each view: a delta refuses views of a replaced photo)


def iconic_products(catalog: Catalog, test: IconicTest, skipped: defaultdict) -> Iterator[tuple[int, ProductImage]]:
    """Each product's first photo, with its row number in the catalog, when it reads and passes the
    white-background test (so it can be cut out); the others are counted in ``skipped`` by reason."""
    seen: set[str] = set()
    for i, p in enumerate(catalog.products):
        if p.product_id in seen:
            continue
        seen.add(p.product_id)
        try:
            image = load_image(p.image)
        except ImageError:
            skipped["unreadable"] += 1
            continue
        if not test.is_iconic(image):
            skipped["not_white_background"] += 1
            continue
        yield i, p


def plan_jobs(catalog: Catalog, category_map: CategoryMap, test: IconicTest) -> tuple[list[_Job], dict[str, int]]:
    """One job per product whose first image is readable and passes the white-background test;
    counts of the products skipped and why."""
    skipped: defaultdict = defaultdict(int)
    jobs = [_Job(p.product_id, p.type, p.image, placement_label(p.type, category_map), i, p.sha256 or file_sha256(p.image))
            for i, p in iconic_products(catalog, test, skipped)]
    return jobs, dict(skipped)


class _Maker:
    """Makes the views of one product (runs in a worker process; backgrounds decoded once per worker)."""

    def __init__(self, backgrounds: dict[str, str], occluders: list[str], prior: PlacementPrior, cfg: SynthesisConfig, out: Path) -> None:
        self.backgrounds, self.occluders, self.prior, self.cfg, self.out = backgrounds, occluders, prior, cfg, out
        self._decoded: dict[str, np.ndarray] = {}

    def background(self, name: str) -> np.ndarray:
        if name not in self._decoded:
            image = load_image(self.backgrounds[name])
            scale = self.cfg.max_side / max(image.shape[:2])
            if scale < 1:
                image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            self._decoded[name] = image
        return self._decoded[name]

    def cutout(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        image = load_image(path)
        return image, self.cfg.cutout.mask(image)

    def views(self, job: _Job) -> tuple[list[SyntheticView], str]:
        """The product's views (empty, with the reason, when it cannot be cut out)."""
        try:
            product, alpha = self.cutout(job.image)
        except (CutoutError, ImageError) as exc:
            return [], f"cutout: {exc}"
        names = sorted(self.backgrounds)
        out = []
        for v in range(self.cfg.views_per_product):
            seed = int.from_bytes(hashlib.sha256(f"{self.cfg.seed}|{job.index}|{v}".encode()).digest()[:4], "little")
            rng = np.random.default_rng(seed)
            name = names[int(rng.integers(len(names)))]
            occluder = None
            if self.occluders:
                try:
                    occluder = self.cutout(self.occluders[int(rng.integers(len(self.occluders)))])
                except (CutoutError, ImageError):
                    occluder = None
            try:
                made = composite(self.background(name), product, alpha, self.prior.sample(job.label, rng), rng, self.cfg.composite, occluder)
            except CompositeError as exc:
                logger.debug("%s view %d: %s", job.product_id, v, exc)
                continue
            rel = f"views/{job.product_id}-{v}.jpg"
            image, box = _context_crop(made.image, made.box, self.cfg.context)
            with atomic_file(self.out / rel) as tmp:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
                if not ok:
                    raise OSError(f"cannot encode {rel}")
                tmp.write_bytes(buf.tobytes())
            out.append(SyntheticView(job.product_id, job.type, name, rel, box, seed,
                                     {**made.params, "scene_box": list(made.box), "photo_sha256": job.sha256}))
        return out, "" if out else "composite: every view failed"


def _context_crop(image: np.ndarray, box: Box, context: float) -> tuple[np.ndarray, Box]:
    """The region of ``box`` grown by ``context`` x its longer side on every side (clipped), and the box in it."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    pad = int(round(context * max(x2 - x1, y2 - y1)))
    cx1, cy1, cx2, cy2 = max(0, x1 - pad), max(0, y1 - pad), min(w, x2 + pad), min(h, y2 + pad)
    return image[cy1:cy2, cx1:cx2].copy(), (x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1)


_WORKER: _Maker | None = None


def _init_worker(maker: _Maker) -> None:
    global _WORKER  # one maker per worker process, so its decoded backgrounds are reused across products
    _WORKER = maker
    cv2.setNumThreads(1)


def _run_job(job: _Job) -> tuple[list[SyntheticView], str]:
    assert _WORKER is not None
    return _WORKER.views(job)


def synthesize(catalog: Catalog, backgrounds: Sequence[str], prior: PlacementPrior, category_map: CategoryMap,
               cfg: SynthesisConfig, out: Path, *, workers: int = 0, only: Collection[str] | None = None,
               progress=None) -> tuple[list[SyntheticView], dict[str, Any]]:
    """Make ``cfg.views_per_product`` views of every product (of ``only`` the products named, when
    given) into ``out/views/``; (views, stats).

    backgrounds: the scene names views may be pasted into (the training scenes only). workers:
    processes (0 = one per CPU). ``progress``: an optional wrapper of the job iterator (tqdm). Every
    product may stand in front of a view as an occluder, named in ``only`` or not.
    """
    if not backgrounds:
        raise ValueError("synthesis needs at least one background scene")
    scene_images = {s.scene: str(s.image) for s in catalog.scenes if s.scene in set(backgrounds)}
    jobs, skipped = plan_jobs(catalog, category_map, cfg.iconic)
    maker = _Maker(scene_images, [str(j.image) for j in jobs], prior, cfg, Path(out))
    if only is not None:
        named = set(only)
        jobs = [j for j in jobs if j.product_id in named]
        _, skipped = plan_jobs(replace(catalog, products=tuple(p for p in catalog.products if p.product_id in named)), category_map, cfg.iconic)
    workers = workers or os.cpu_count() or 1
    views: list[SyntheticView] = []
    failed: dict[str, int] = defaultdict(int)
    if workers == 1:
        _init_worker(maker)
        results = map(_run_job, jobs)
        for made, reason in (progress(results, total=len(jobs)) if progress else results):
            views += made
            failed[reason.split(":")[0]] += bool(reason)
    else:
        # spawn, not fork: the parent may hold TensorFlow / TFLite threads, which a forked child deadlocks on
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(maker,)) as pool:
            results = pool.map(_run_job, jobs, chunksize=8)
            for made, reason in (progress(results, total=len(jobs)) if progress else results):
                views += made
                failed[reason.split(":")[0]] += bool(reason)
    stats = {"products": len(catalog.product_ids) if only is None else len(set(only)), "products_with_views": len({v.product_id for v in views}), "views": len(views),
             "skipped": skipped, "failed": {k: v for k, v in failed.items() if v}, "backgrounds": len(scene_images)}
    return views, stats

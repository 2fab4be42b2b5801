"""``python -m training.synthesize``: synthetic in-room views of every catalog product (``training.synthesis``).

Backgrounds are the catalog's scenes minus the held-out ones (``--holdout-scenes``, or those a
``--triplets`` manifest was mined without), so no evaluation scene ever trains. Views are cached
on disk beside a versioned manifest; running again with the same catalog, settings and
backgrounds reuses them. Logs a contact sheet (views beside their catalog photos) to MLflow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detectors.cache import DetectionCache
from detectors.category_map import DEFAULT_MAP, CategoryMap, load_category_map, map_for_detector
from detectors.yolo import YoloDetector, default_weights
from engine.data.catalog import Catalog, check_product_images, load_catalog, read_product_rows
from engine.config import DEFAULT_CROP_PADDING
from engine.data.images import load_image, load_square, query_crop
from engine.runtime import run_cli
from engine.data.splits import read_scene_list, restrict_scenes
from training.manifest import load_manifest
from training.mining import contact_sheet
from training.synthesis import (
    SynthesisConfig,
    SyntheticManifest,
    load_synthetic_manifest,
    placement_prior,
    save_synthetic_manifest,
    synthesize,
)
from training.tracking import mlflow_run

logger = logging.getLogger("training.synthesize")


def build_parser() -> argparse.ArgumentParser:
    d = SynthesisConfig()
    p = argparse.ArgumentParser(
        prog="python -m training.synthesize",
        description="Paste every catalog product, cut out of its white background, into training room photos: synthetic query crops for training.fit --synthetic.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--catalog", type=Path, default=None, help="catalog directory (default: the --triplets manifest's)")
    p.add_argument("--triplets", type=Path, default=None, help="a mined manifest: the scenes it was mined without stay out of the backgrounds")
    p.add_argument("--holdout-scenes", type=Path, default=None, help="scene list (python -m evaluation.holdout) never used as a background")
    p.add_argument("--out", type=Path, default=None, help="folder for manifest.json and views/ (default: <state>/synthetic/<catalog>-<key>)")
    p.add_argument("--only", type=Path, default=None, metavar="PRODUCTS.csv",
                   help="views of these rows' products only (products.csv's format, image paths relative to --catalog; "
                        "products new to the catalog too): for build_index --add/--update PRODUCTS.csv --views")
    p.add_argument("--views-per-product", type=int, default=d.views_per_product, help="composites made of each product")
    p.add_argument("--detector-weights", default=None, help="YOLO weights whose detections of each class in the backgrounds give where and how big a product of that class sits (default: $SHOWROOM_DETECTOR_WEIGHTS, else yolo11n.pt)")
    p.add_argument("--no-detector", action="store_true", help="place products only by the pairs.csv boxes (and the floor-standing default), without detections")
    p.add_argument("--category-map", type=Path, default=None, help="catalog type → detector class map (default: detectors/product_groups.yaml for a detector of the product groups, else detectors/category_map.yaml)")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = one per CPU)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of every view")
    p.add_argument("--sheet-views", type=int, default=24, help="views on the MLflow contact sheet")
    p.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda home: _run(args, home), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace, home: Path) -> int:
    holdout: set[str] = set(read_scene_list(args.holdout_scenes)) if args.holdout_scenes else set()
    catalog_dir = args.catalog
    if args.triplets:
        mined = load_manifest(args.triplets)
        holdout |= set(mined.holdout_scenes)
        catalog_dir = catalog_dir or Path(mined.catalog)
    if catalog_dir is None:
        raise ValueError("pass --catalog (or --triplets, whose catalog is used)")
    catalog = load_catalog(catalog_dir)
    backgrounds = sorted(s.scene for s in restrict_scenes(catalog, drop=holdout).scenes)
    only = None
    if args.only:
        catalog, only = with_rows(catalog, args.only)
    cfg = SynthesisConfig(views_per_product=args.views_per_product, seed=args.seed)
    detector = None if args.no_detector else YoloDetector(args.detector_weights or default_weights(), conf=cfg.min_confidence)
    # where products sit: the detections of the class their type maps to, in the map of this detector's classes
    cmap = (map_for_detector(detector.class_names, args.category_map) if detector is not None
            else load_category_map(args.category_map or DEFAULT_MAP))
    detector_id = detector.fingerprint if detector is not None else "none"
    named = set(only or ())  # --only's rows are part of what the views are made of
    key = hashlib.sha256(json.dumps([catalog.fingerprint, cfg.describe(), backgrounds, detector_id, cmap.version]
                                    + ([[(p.product_id, p.type, p.sha256) for p in catalog.products if p.product_id in named]] if only else [])
                                    ).encode()).hexdigest()[:12]
    out = args.out or home / "synthetic" / f"{catalog.root.name}-{key}"
    manifest = _cached(out / "manifest.json", key)
    if manifest is None:
        manifest = _make(catalog, backgrounds, sorted(holdout), detector, cmap, cfg, out, key, args.workers, home, only, args.only)
    st = manifest.stats
    line = (f"{st['views']} synthetic views of {st['products_with_views']}/{st['products']} products in {len(backgrounds)} background scenes "
            f"({len(holdout)} held out); skipped {st['skipped']}, failed {st['failed']} -> {out / 'manifest.json'}")
    if not args.no_mlflow:
        line += "\n" + _log_run(catalog, manifest, out, args.sheet_views)
    print(line)
    return 0


def _cached(path: Path, key: str) -> SyntheticManifest | None:
    """The manifest at ``path`` when it was made with the same catalog, settings and backgrounds."""
    if not path.is_file():
        return None
    manifest = load_synthetic_manifest(path)
    if manifest.producer.get("key") != key:
        return None
    logger.info("reusing the synthetic views in %s (same catalog, settings and backgrounds)", path.parent)
    return manifest


def with_rows(catalog: Catalog, products_csv: Path) -> tuple[Catalog, list[str]]:
    """``catalog`` with the rows of ``products_csv`` (products.csv's format, paths relative to the
    catalog's root; each photo checked) in place of any rows of the same products, and those
    products' ids: what ``--only`` makes views of. The fingerprint stays the catalog folder's."""
    rows = check_product_images(read_product_rows(products_csv, catalog.root)[0], products_csv)
    ids = list(dict.fromkeys(p.product_id for p in rows))
    named = set(ids)
    kept = tuple(p for p in catalog.products if p.product_id not in named)
    types = {**{p.product_id: p.type for p in kept}, **{p.product_id: p.type for p in rows}}
    return Catalog(catalog.root, kept + tuple(rows), catalog.scenes, catalog.pairs, catalog.fingerprint, types), ids


def _make(catalog: Catalog, backgrounds: list[str], holdout: list[str], detector: YoloDetector | None, cmap: CategoryMap,
          cfg: SynthesisConfig, out: Path, key: str, workers: int, home: Path, only: list[str] | None = None,
          only_file: Path | None = None) -> SyntheticManifest:
    detect = DetectionCache(detector, home / "cache" / "detections").detect if detector is not None else None
    prior = placement_prior(catalog, backgrounds, detect, cfg.min_confidence, cmap)
    views, stats = synthesize(catalog, backgrounds, prior, cmap, cfg, out, workers=workers, only=only,
                              progress=lambda it, total: tqdm(it, total=total, desc="synthesizing", unit="product"))
    stats["placement_boxes"] = {k: len(v) for k, v in sorted(prior.boxes.items())}
    manifest = SyntheticManifest(
        catalog=str(catalog.root), catalog_fingerprint=catalog.fingerprint, views=views,
        producer={"tool": "training.synthesize", "key": key, "config": cfg.describe(), "detector": detector.fingerprint if detector else "none",
                  "category_map_version": cmap.version, "background_scenes": backgrounds, "holdout_scenes": holdout,
                  **({"only": {"file": str(only_file), "products": len(only)}} if only is not None else {})},
        stats=stats, created=datetime.now(timezone.utc).isoformat(timespec="seconds"), folder=out,
    )
    save_synthetic_manifest(manifest, out / "manifest.json")
    return manifest


def sample_sheet(catalog: Catalog, manifest: SyntheticManifest, n: int, seed: int = 0, size: int = 128) -> np.ndarray:
    """Random views, each as training crops it (padded square) beside the product's catalog photo."""
    rng = np.random.default_rng(seed)
    first = {}
    for p in catalog.products:
        first.setdefault(p.product_id, p.image)
    pick = sorted(rng.permutation(len(manifest.views))[:n])
    samples = []
    for i in pick:
        v = manifest.views[i]
        crop = query_crop(load_image(manifest.image_path(v)), v.box, size, DEFAULT_CROP_PADDING)
        samples.append((crop, load_square(first[v.product_id], size), f"{v.type[:16]} in {v.background[:10]}"))
    return contact_sheet(samples)


def _log_run(catalog: Catalog, manifest: SyntheticManifest, out: Path, sheet_views: int) -> str:
    with mlflow_run(run_name=f"synthesize-{catalog.root.name}") as tracker, tempfile.TemporaryDirectory() as tmp:
        tracker.set_tags({"showroom.kind": "synthesize", "showroom.catalog": catalog.root.name})
        cfg = manifest.producer["config"]
        tracker.log_params({"catalog": str(catalog.root), "catalog_fingerprint": catalog.fingerprint, "views_per_product": cfg["views_per_product"],
                            "seed": cfg["seed"], "backgrounds": len(manifest.background_scenes),
                            "holdout_scenes": len(manifest.producer.get("holdout_scenes", [])), "detector": manifest.producer["detector"]})
        tracker.log_metrics({"views": manifest.stats["views"], "products_with_views": manifest.stats["products_with_views"]}, step=0)
        sheet = Path(tmp) / "contact_sheet.png"
        cv2.imwrite(str(sheet), cv2.cvtColor(sample_sheet(catalog, manifest, sheet_views), cv2.COLOR_RGB2BGR))
        tracker.log_artifact(sheet)
        tracker.log_artifact(out / "manifest.json", "manifest")
        return f"MLflow run {tracker.run_id}: artifacts contact_sheet.png, manifest/manifest.json"


if __name__ == "__main__":
    raise SystemExit(main())

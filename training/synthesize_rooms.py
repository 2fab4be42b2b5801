"""``python -m training.synthesize_rooms``: a labelled dataset for a detector of the catalog's product groups.

Rooms of the development scenes filled with pasted catalog products, every box labelled with its
product group (``training.room_synthesis``), in the Ultralytics YOLO layout, for
``python -m training.fit_detector``. Backgrounds are split by scene into training and validation
(``--val-fraction``, seeded); held-out scenes (``--holdout-scenes``) are never used. The objects a
background already holds are labelled from a COCO detector's confident detections
(``--detector-weights``), by the groups map's ``from_classes``. The validation scenes are also
written as they are, with those detections as labels (split ``test``: real boxes, of the groups a
COCO class reaches). The same catalog, settings and scenes reuse the dataset already written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.runtime import run_cli

logger = logging.getLogger("training.synthesize_rooms")


def build_parser() -> argparse.ArgumentParser:
    from training.room_synthesis import RoomSynthesisConfig

    d = RoomSynthesisConfig()
    p = argparse.ArgumentParser(prog="python -m training.synthesize_rooms", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--catalog", type=Path, required=True, help="catalog directory (products.csv, scenes.csv)")
    p.add_argument("--holdout-scenes", type=Path, default=None, metavar="FILE", help="scene list never used (python -m evaluation.holdout)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of the other scenes whose rooms are validation images only")
    p.add_argument("--detector-weights", default=None,
                   help="COCO detector labelling what the backgrounds already hold (default: $SHOWROOM_DETECTOR_WEIGHTS, else yolo11n.pt)")
    p.add_argument("--no-detector", action="store_true", help="do not label the backgrounds' own objects")
    p.add_argument("--groups-map", type=Path, default=None, help="type → group YAML (default: detectors/product_groups.yaml)")
    p.add_argument("--train-images", type=int, default=d.train_images, help="training composites")
    p.add_argument("--val-images", type=int, default=d.val_images, help="validation composites")
    p.add_argument("--products", type=int, nargs=2, default=d.products, metavar=("MIN", "MAX"), help="products pasted per image")
    p.add_argument("--max-side", type=int, default=d.max_side, help="longer side of the written images (the detector's input size)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the scene split and of every image")
    p.add_argument("--out", type=Path, default=None, help="dataset folder (default: $SHOWROOM_HOME/rooms/<catalog>-<key>)")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = one per CPU)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.val_fraction < 1:
        raise SystemExit("--val-fraction must be between 0 and 1")
    return run_cli(lambda home: _run(args, home), verbose=args.verbose, logger_name=logger.name)


def split_backgrounds(scenes: Sequence[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Scene names split into 'train' and 'val' backgrounds (seeded; at least one of each when possible)."""
    names = sorted(scenes)
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = min(len(names) - 1, max(1, round(val_fraction * len(names)))) if len(names) > 1 else 0
    val = sorted(names[i] for i in order[:n_val])
    return {"train": sorted(set(names) - set(val)), "val": val}


def _run(args: argparse.Namespace, home: Path) -> int:
    from tqdm import tqdm

    from detectors.cache import DetectionCache
    from detectors.category_map import GROUPS_MAP, load_category_map
    from detectors.yolo import YoloDetector, default_weights
    from engine.data.catalog import load_catalog
    from engine.data.images import ImageError, load_image
    from engine.data.splits import read_scene_list
    from training.room_synthesis import (RoomSynthesisConfig, dataset_stats, save_rooms_manifest, synthesize_rooms, write_real_split,
                                         write_yolo_labels)

    holdout = set(read_scene_list(args.holdout_scenes)) if args.holdout_scenes else set()
    catalog = load_catalog(args.catalog)
    groups_map = load_category_map(args.groups_map or GROUPS_MAP)
    splits = split_backgrounds([s.scene for s in catalog.scenes if s.scene not in holdout], args.val_fraction, args.seed)
    cfg = RoomSynthesisConfig(train_images=args.train_images, val_images=args.val_images, products=tuple(args.products),
                              max_side=args.max_side, seed=args.seed)
    detector = None if args.no_detector else YoloDetector(args.detector_weights or default_weights(), conf=cfg.pseudo_confidence)
    key_parts = [catalog.fingerprint, repr(cfg), splits, detector.fingerprint if detector else "none", groups_map.version, str(groups_map.source)]
    key = hashlib.sha256(json.dumps(key_parts, default=str).encode()).hexdigest()[:12]
    out = args.out or home / "rooms" / f"{catalog.root.name}-{key}"
    manifest = out / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("producer", {}).get("key") == key:
        print(f"reusing the rooms dataset in {out} (same catalog, settings and scenes) -> {out / 'data.yaml'}")
        return 0
    detections = {}
    if detector is not None:
        cache = DetectionCache(detector, home / "cache" / "detections")
        for s in tqdm([s for s in catalog.scenes if s.scene in set(splits["train"]) | set(splits["val"])], desc="detecting", unit="scene"):
            try:
                detections[s.scene] = cache.detect(s.image, load_image(s.image))
            except ImageError as exc:
                logger.warning("skipping the labels of %s: %s", s.scene, exc)
    images, stats = synthesize_rooms(catalog, splits, detections, groups_map, cfg, out, workers=args.workers,
                                     progress=lambda it, total: tqdm(it, total=total, desc="rooms", unit="image"))
    if detections:
        real = write_real_split(catalog, splits["val"], detections, groups_map, out, max_side=cfg.max_side, min_confidence=cfg.pseudo_confidence)
        images += real
        write_yolo_labels(images, groups_map.groups, out)
        stats = {**stats, "test": dataset_stats(real, {}, {}, groups_map.groups)["test"]}
    producer = {"tool": "training.synthesize_rooms", "key": key, "catalog": str(catalog.root), "catalog_fingerprint": catalog.fingerprint,
                "config": repr(cfg), "groups_map": str(groups_map.source), "groups_map_version": groups_map.version, "groups": list(groups_map.groups),
                "detector": detector.fingerprint if detector else "none", "train_scenes": splits["train"], "val_scenes": splits["val"],
                "holdout_scenes": sorted(holdout), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    save_rooms_manifest(manifest, images, producer, stats)
    tr, va = stats["train"], stats["val"]
    print(f"{tr['images']} training images ({tr['boxes_pasted']} pasted + {tr['boxes_detected']} detected boxes, {tr['backgrounds']} scenes), "
          f"{va['images']} validation images ({va['boxes_pasted']} + {va['boxes_detected']}, {va['backgrounds']} scenes); "
          f"{len(holdout)} scenes held out"
          + (f"; {stats['test']['images']} real validation photos ({stats['test']['boxes_detected']} detected boxes)" if "test" in stats else "")
          + f" -> {out / 'data.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

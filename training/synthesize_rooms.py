"""``python -m training.synthesize_rooms``: a labelled dataset for a detector of the catalog's product groups.

Rooms of the development scenes filled with pasted catalog products, every box labelled with its
product group (``training.room_synthesis``), in the Ultralytics YOLO layout, for
``python -m training.fit_detector``. Backgrounds are split by scene into training and validation
(``--val-fraction``, seeded); held-out scenes (``--holdout-scenes``) are never used. The objects a
background already holds are labelled from a COCO detector's confident detections
(``--detector-weights``), by the groups map's ``from_classes``. The validation scenes are also
written as they are, with those detections as labels (split ``test``: real boxes, of the groups a
COCO class reaches). Boxes drawn by hand on background scenes (``--background-boxes``, ``showroom.boxes``
files) label every group a photo holds, not only the COCO classes; ``--relabel DIR`` adds them to a
dataset already written, without painting it again. The same catalog, settings and scenes reuse the
dataset already written.
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
    p.add_argument("--catalog", type=Path, default=None, help="catalog directory (products.csv, scenes.csv)")
    p.add_argument("--background-boxes", type=Path, nargs="+", default=(), metavar="FILE",
                   help="showroom.boxes files of boxes drawn by hand on background scenes: labels of every group they hold")
    p.add_argument("--relabel", type=Path, default=None, metavar="DIR",
                   help="add the --background-boxes to the rooms dataset already written in DIR (its labels and manifest), without painting it again")
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error("--val-fraction must be between 0 and 1")
    if args.relabel is not None:
        if not args.background_boxes:
            parser.error("--relabel needs --background-boxes: the boxes to add")
        return run_cli(lambda home: _relabel(args), verbose=args.verbose, logger_name=logger.name)
    if args.catalog is None:
        parser.error("give --catalog (or --relabel DIR with --background-boxes)")
    return run_cli(lambda home: _run(args, home), verbose=args.verbose, logger_name=logger.name)


def read_background_boxes(paths: Sequence[Path]) -> tuple[dict[str, list], list[dict[str, str]]]:
    """Scene -> hand-drawn (group, relative box) from ``showroom.boxes`` files (a scene in two files is
    an error: which to trust is unclear), and what was read (path and sha256 of each, for a manifest)."""
    from engine.data.boxes import read_boxes

    merged: dict[str, list] = {}
    sources = []
    for path in paths:
        boxes = read_boxes(path)
        twice = sorted(set(boxes) & set(merged))
        if twice:
            raise ValueError(f"--background-boxes: scenes drawn in two files ({path} and an earlier one): {twice[:3]}")
        merged.update(boxes)
        sources.append({"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()})
    return merged, sources


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
    hand, hand_sources = read_background_boxes(args.background_boxes)
    unknown = sorted(set(hand) - {s.scene for s in catalog.scenes})
    if unknown:
        raise ValueError(f"--background-boxes names scenes the catalog does not hold: {unknown[:3]}")
    backgrounds = set(splits["train"]) | set(splits["val"])
    if set(hand) - backgrounds:
        logger.info("%d scenes of --background-boxes are not backgrounds here (held out): not used", len(set(hand) - backgrounds))
    hand = {s: b for s, b in hand.items() if s in backgrounds}
    detector = None if args.no_detector else YoloDetector(args.detector_weights or default_weights(), conf=cfg.pseudo_confidence)
    key_parts = [catalog.fingerprint, repr(cfg), splits, detector.fingerprint if detector else "none", groups_map.version, str(groups_map.source)]
    key_parts += [s["sha256"] for s in hand_sources]
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
                                     progress=lambda it, total: tqdm(it, total=total, desc="rooms", unit="image"), hand=hand)
    if detections or hand:
        real = write_real_split(catalog, splits["val"], detections, groups_map, out, max_side=cfg.max_side, min_confidence=cfg.pseudo_confidence,
                                hand=hand)
        images += real
        write_yolo_labels(images, groups_map.groups, out)
        stats = {**stats, "test": dataset_stats(real, {}, {}, groups_map.groups)["test"]}
    producer = {"tool": "training.synthesize_rooms", "key": key, "catalog": str(catalog.root), "catalog_fingerprint": catalog.fingerprint,
                "config": repr(cfg), "groups_map": str(groups_map.source), "groups_map_version": groups_map.version, "groups": list(groups_map.groups),
                "detector": detector.fingerprint if detector else "none", "train_scenes": splits["train"], "val_scenes": splits["val"],
                "holdout_scenes": sorted(holdout), "background_boxes": hand_sources,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    save_rooms_manifest(manifest, images, producer, stats)
    print(_summary(stats, out) + f"; {len(holdout)} scenes held out")
    return 0


def _summary(stats: dict, out: Path) -> str:
    def boxes(s: dict) -> str:
        return f"{s['boxes_pasted']} pasted + {s['boxes_detected']} detected + {s.get('boxes_hand', 0)} hand-drawn boxes, {s['backgrounds']} scenes"

    tr, va = stats["train"], stats["val"]
    return (f"{tr['images']} training images ({boxes(tr)}), {va['images']} validation images ({boxes(va)})"
            + (f"; {stats['test']['images']} real validation photos ({stats['test']['boxes_detected']} detected + "
               f"{stats['test'].get('boxes_hand', 0)} hand-drawn boxes)" if "test" in stats else "")
            + f" -> {out / 'data.yaml'}")


def _relabel(args: argparse.Namespace) -> int:
    """Add the hand-drawn boxes of the dataset's backgrounds to its labels, manifest and stats."""
    from training.room_synthesis import dataset_stats, load_rooms_manifest, relabel_rooms, save_rooms_manifest, write_yolo_labels

    out = args.relabel
    manifest = out / "manifest.json"
    if not manifest.is_file():
        raise ValueError(f"--relabel {out}: no manifest.json there (a python -m training.synthesize_rooms dataset folder)")
    images, producer, stats = load_rooms_manifest(manifest)
    hand, sources = read_background_boxes(args.background_boxes)
    held = sorted(set(hand) & set(producer.get("holdout_scenes", ())))
    if held:
        logger.info("%d scenes of --background-boxes are held out: not used", len(held))
    used = {im.background for im in images}
    relabelled = relabel_rooms(images, {s: b for s, b in hand.items() if s in used}, producer["groups"],
                               _min_uncovered(producer.get("config", "")))
    write_yolo_labels(relabelled, producer["groups"], out)
    fresh = dataset_stats(relabelled, {}, {}, producer["groups"])
    stats = {**stats, **{split: fresh[split] for split in ("train", "val", "test") if fresh[split]["images"]}}
    painted = producer.get("painted_key", producer.get("key", ""))  # the key of the images as painted: relabelling again starts from it
    key = hashlib.sha256(json.dumps([painted] + [s["sha256"] for s in sources]).encode()).hexdigest()[:12]
    producer = {**producer, "key": key, "painted_key": painted, "background_boxes": sources,
                "relabelled": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    save_rooms_manifest(manifest, relabelled, producer, stats)
    print(_summary(stats, out) + f" (relabelled with {sum(len(hand.get(s, ())) for s in used)} hand-drawn boxes on "
                                 f"{len(used & set(hand))} of its {len(used)} scenes)")
    return 0


def _min_uncovered(config: str) -> float:
    """The dataset's ``min_uncovered`` from its recorded config (the default when not recorded)."""
    import re

    from training.room_synthesis import RoomSynthesisConfig

    found = re.search(r"min_uncovered=([0-9.]+)", config)
    return float(found.group(1)) if found else RoomSynthesisConfig().min_uncovered


if __name__ == "__main__":
    raise SystemExit(main())

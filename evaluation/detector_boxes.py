"""``python -m evaluation.detector_boxes``: a detector's AP per product group on hand-drawn boxes, beside another's.

    python -m evaluation.detector_boxes --catalog ../shared/data/ikea --boxes evaluation/data/ikea_dev_boxes.json \
        --detector groups.tflite --versus ../shared/weights/yolov8n_coco_int8.tflite

The boxes file (``showroom.boxes`` v1) gives, per scene of the catalog, ``[group, x1, y1, x2, y2]``
with coordinates as fractions of the photo's width and height. Each detector runs on the photos
down to ``--min-confidence``; its classes become groups (a group detector's class is its group, a
COCO class goes through ``from_classes``; others are dropped). Printed per group: the true boxes,
AP@0.5 of each detector, and the share of true boxes the page would offer a box for (the model's
confident boxes and fill-ins, ``engine.data.proposals.confident``, kept as the page keeps them:
``engine.data.proposals.page_boxes``, the rule of the room list and of ``evaluation.evaluate``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.data.boxes import read_boxes
from engine.runtime import run_cli

logger = logging.getLogger("evaluation.detector_boxes")


def build_parser() -> argparse.ArgumentParser:
    from engine.config import Preprocessing

    p = argparse.ArgumentParser(prog="python -m evaluation.detector_boxes", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--catalog", type=Path, required=True, help="catalog directory whose scenes the boxes are drawn on")
    p.add_argument("--boxes", type=Path, required=True, help="a showroom.boxes JSON file of hand-drawn boxes")
    p.add_argument("--detector", required=True, help="detector weights (.tflite, .pt)")
    p.add_argument("--versus", default=None, help="a second detector scored on the same boxes")
    p.add_argument("--groups-map", type=Path, default=None, help="type → group map (default: detectors/product_groups.yaml)")
    p.add_argument("--min-confidence", type=float, default=0.01, help="the detectors report boxes down to this confidence (for AP)")
    p.add_argument("--page-confidence", type=float, default=Preprocessing().min_confidence, help="confidence of a sure box on the page")
    p.add_argument("--fill-confidence", type=float, default=Preprocessing().fill_confidence, help="a group's fill-in box goes down to this")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda home: _run(args), logger_name=logger.name)


def _run(args: argparse.Namespace) -> int:
    from detectors.category_map import GROUPS_MAP, label_groups, load_category_map
    from detectors.yolo import YoloDetector
    from engine.data.catalog import load_catalog
    from engine.data.images import load_image
    from evaluation.detection import Scored, ap_per_group, box_recall

    groups_map = load_category_map(args.groups_map or GROUPS_MAP)
    relative = read_boxes(args.boxes)
    catalog = load_catalog(args.catalog)
    scenes = {s.scene: s for s in catalog.scenes}
    unknown = sorted(set(relative) - set(scenes))
    if unknown:
        raise ValueError(f"--boxes names scenes the catalog does not hold: {unknown[:3]}")
    images = {name: load_image(scenes[name].image) for name in relative}
    truth = {name: [(g, (b[0] * im.shape[1], b[1] * im.shape[0], b[2] * im.shape[1], b[3] * im.shape[0])) for g, b in relative[name]]
             for name, im in images.items()}
    results = {}
    for weights in [args.detector] + ([args.versus] if args.versus else []):
        detector = YoloDetector(weights, conf=args.min_confidence)
        to_group = label_groups(detector.class_names, groups_map)
        scored, page = [], []
        for name, image in images.items():
            found = [d for d in detector.detect(image) if d.label in to_group]
            scored += [Scored(name, to_group[d.label], d.box, d.confidence) for d in found]
            offered = page_offers(found, set(to_group), args.page_confidence, args.fill_confidence)
            page += [Scored(name, to_group[d.label], d.box, d.confidence) for d in offered]
        results[weights] = {"ap50": ap_per_group(scored, truth), "page_recall": box_recall(page, truth),
                            "page_boxes_per_photo": len(page) / max(1, len(images)), "groups": sorted(set(to_group.values()))}
    counts = {}
    for boxes in truth.values():
        for g, _ in boxes:
            counts[g] = counts.get(g, 0) + 1
    print(_table(results, counts, args, set(groups_map.from_classes.values())))
    if args.out:
        args.out.write_text(json.dumps({"photos": len(images), "true_boxes": counts, "results": results}, indent=1))
    return 0


def page_offers(found: Sequence, labels: set[str], page_confidence: float, fill_confidence: float) -> list:
    """The detections of one photo the page offers: the confident ones and each label's fill-in
    (``engine.data.proposals.confident``), kept as the page keeps boxes (``page_boxes``: no
    near-copies, at most ``MAX_PAGE_BOXES``), most confident first."""
    from engine.data.proposals import confident, page_boxes

    return page_boxes(confident(found, page_confidence, fill_confidence, labels), page_confidence, labels)


def _table(results: dict, counts: dict, args: argparse.Namespace, coco_groups: set[str]) -> str:
    names = list(results)
    head = f"{'group':<10} {'boxes':>5}  " + "  ".join(f"{'AP50 ' + Path(n).stem[:14]:>20} {'page':>5}" for n in names)
    lines = [head, "-" * len(head)]
    for g in sorted(counts, key=lambda g: -counts[g]):
        lines.append(f"{g:<10} {counts[g]:>5}  " + "  ".join(f"{results[n]['ap50'].get(g, float('nan')):>20.3f} "
                                                            f"{results[n]['page_recall'].get(g, float('nan')):>5.2f}" for n in names))
    for label, keep in (("mean, all groups", lambda g: True), ("mean, COCO groups", lambda g: g in coco_groups),
                        ("mean, other groups", lambda g: g not in coco_groups)):
        gs = [g for g in counts if keep(g)]
        lines.append(f"{label:<17}  " + "  ".join(f"{np.mean([results[n]['ap50'][g] for g in gs]):>20.3f} "
                                                 f"{np.mean([results[n]['page_recall'][g] for g in gs]):>5.2f}" for n in names))
    lines.append(f"{sum(counts.values())} hand-drawn boxes; page boxes a photo: "
                 + ", ".join(f"{Path(n).stem}: {results[n]['page_boxes_per_photo']:.1f}" for n in names))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""The YOLO ``.tflite`` on Ultralytics' LiteRT path against LiteRT run directly, side by side.

    python -m benchmarks.detectors --weights ../shared/weights/yolov8n_coco_int8.tflite \
        --photos ../shared/data/ikea/images/scenes [--n 12] [--rounds 3] [--threads 1,2]

Each round times every photo with each detector in turn (so drift hits both alike); prints the
median ms per photo, the ratio to Ultralytics, and how the boxes agree (every Ultralytics box's
twin: same class, IoU, score difference). Asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from detectors.agreement import box_iou

logger = logging.getLogger("benchmarks.detectors")


def agreement(reference, other) -> tuple[int, int, float, float]:
    """(boxes in reference, those without a same-class twin, min IoU of twins, max score difference)."""
    missing, ious, diffs = 0, [], []
    for d in reference:
        twins = [o for o in other if o.label == d.label]
        if not twins:
            missing += 1
            continue
        best = max(twins, key=lambda o: box_iou(d.box, o.box))
        ious.append(box_iou(d.box, best.box))
        diffs.append(abs(d.confidence - best.confidence))
    return len(reference), missing, min(ious, default=1.0), max(diffs, default=0.0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.detectors", description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="a YOLO .tflite export")
    p.add_argument("--photos", type=Path, required=True, help="a folder of .jpg photos")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", default="1,2", help="LiteRT interpreter threads to try")
    p.add_argument("--conf", type=float, default=0.25)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from engine.runtime import configure_runtime

    configure_runtime()  # before Ultralytics and LiteRT load
    from detectors.litert import LiteRTDetector
    from detectors.yolo import YoloDetector
    from engine.data.images import load_image

    photos = sorted(args.photos.glob("*.jpg"))[: args.n]
    if not photos:
        logger.error("no .jpg photos in %s", args.photos)
        return 2
    images = [load_image(p) for p in photos]
    detectors = {"ultralytics": YoloDetector(args.weights, conf=args.conf)}
    for t in (int(x) for x in args.threads.split(",")):
        detectors[f"litert {t} thread{'s' if t > 1 else ''}"] = LiteRTDetector(args.weights, conf=args.conf, num_threads=t)
    for d in detectors.values():
        d.detect(images[0])  # load and warm up
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for _ in range(args.rounds):
        for image in images:
            for name, d in detectors.items():
                t = time.perf_counter()
                d.detect(image)
                times[name].append(time.perf_counter() - t)
    base = statistics.median(times["ultralytics"])
    print(f"{len(images)} photos x {args.rounds} rounds, conf {args.conf}")
    print(f"{'detector':<20} {'median ms':>10} {'ratio':>6}  agreement with ultralytics (boxes, unmatched, min IoU, max |dconf|)")
    for name, d in detectors.items():
        med = statistics.median(times[name])
        stats = [agreement(detectors["ultralytics"].detect(im), d.detect(im)) for im in images]
        n, missing = sum(s[0] for s in stats), sum(s[1] for s in stats)
        print(f"{name:<20} {1000 * med:>10.1f} {med / base:>6.2f}  {n}, {missing}, {min(s[2] for s in stats):.3f}, {max(s[3] for s in stats):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

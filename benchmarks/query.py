"""A query against its two models: upload → JSON latency of a live server beside the detector's and
the embedder's own forward passes, measured in the same run.

    python -m benchmarks.query --url http://127.0.0.1:8000 --index .showroom/index \
        --detector-weights ../shared/weights/yolov8n_coco_int8.tflite --photos ../shared/data/ikea/images/scenes

1. With the server idle, this process loads the served model (``--index``: the serving folder) and
   the detector, and times on each photo ``detector.detect`` and one embedder forward of a crop at
   the model's input size: the *model floor* per query.
2. Then ``--clients`` (default 1 and 4) threads post the photos to each of ``--routes``:
   ``/api/search`` (the server detects, crops the most confident object, embeds and searches) and
   ``/api/room`` ("shop this room": every proposed object cropped, embedded as one batch and
   searched within its group), ``--requests`` per client level. Client-side latency p50/p99 and the
   server's per-stage medians (``timings_ms``) are printed with the ratios: p50 at 1 client / model
   floor, and p99 / p50 at 4 clients, for search; p50 and p99 of a room (goal p50 <= 1.5 s).

Loopback only (the server must be on this machine: the floor is measured here), bounded in
requests and time. Prints ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.reload_load import multipart, request
from engine.runtime import configure_runtime

logger = logging.getLogger("benchmarks.query")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if values else float("nan")


def model_floor(index: Path, weights: str, photos: list[Path], runtime: str) -> dict[str, float]:
    """Median ms of the detector and of one embedder forward per photo, in this process."""
    from detectors.open import open_detector
    from engine.model.embedder import Embedder
    from engine.index.generations import resolve_serving_folder
    from engine.data.images import load_image, query_crop

    embedder = Embedder.load(resolve_serving_folder(index) / "model.keras")
    detector = open_detector(weights, conf=embedder.preprocessing.detector_confidence, runtime=runtime)
    prep = embedder.preprocessing
    images = [load_image(p) for p in photos]
    detector.detect(images[0])
    embedder(query_crop(images[0], None, prep.image_size, prep.crop_padding)[None])  # warm both up
    det, emb = [], []
    for _ in range(2):
        for image in images:
            t = time.perf_counter()
            found = detector.detect(image)
            det.append(time.perf_counter() - t)
            crop = query_crop(image, found[0].box if found else None, prep.image_size, prep.crop_padding)[None]
            t = time.perf_counter()
            embedder(crop)
            emb.append(time.perf_counter() - t)
    return {"detect_ms": 1000 * statistics.median(det), "embed_ms": 1000 * statistics.median(emb), "detector": detector.fingerprint}


def load_level(url: str, photos: list[bytes], clients: int, requests: int, timeout_s: float, route: str = "search") -> dict:
    """``clients`` threads share ``requests`` calls of ``/api/<route>``; client-side ms and the server's
    stage timings (and, for a room, its objects)."""
    lock, latencies, stages, failures, objects = threading.Lock(), [], [], [], []
    counter = iter(range(requests))
    deadline = time.monotonic() + timeout_s
    bodies = [multipart(p, {"k": "12"}) for p in photos]

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            body, ctype = bodies[i % len(bodies)]
            t = time.perf_counter()
            status, _, answer = request(url + f"/api/{route}", body, {"Content-Type": ctype})
            ms = 1000 * (time.perf_counter() - t)
            with lock:
                if status == 200:
                    payload = json.loads(answer)
                    latencies.append(ms)
                    stages.append(payload["timings_ms"])
                    objects.append(len(payload.get("objects", ())))
                else:
                    failures.append(status)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    names = sorted({k for s in stages for k in s})
    return {"route": route, "clients": clients, "n": len(latencies), "failures": failures, "qps": len(latencies) / wall,
            "objects": statistics.median(objects) if objects else 0,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "stages": {k: statistics.median(s[k] for s in stages if k in s) for k in names}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.query", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="a server on this machine, e.g. http://127.0.0.1:8000")
    p.add_argument("--index", type=Path, required=True, help="the serving folder the server serves (for the model floor)")
    p.add_argument("--detector-weights", required=True, help="the detector weights the server uses")
    p.add_argument("--runtime", default="auto", choices=("auto", "litert", "ultralytics"), help="detector runtime for the floor")
    p.add_argument("--photos", type=Path, required=True, help="a folder of room photos (.jpg)")
    p.add_argument("--n-photos", type=int, default=12)
    p.add_argument("--clients", default="1,4", help="concurrency levels")
    p.add_argument("--requests", type=int, default=48, help="searches per concurrency level")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per level at most")
    p.add_argument("--routes", default="search,room", help="comma-separated API routes to load: search, room")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_runtime()  # before model_floor loads TensorFlow and the detector
    url = args.url.rstrip("/")
    if urllib.parse.urlsplit(url).hostname not in LOOPBACK:
        logger.error("loopback servers only (the model floor is measured on this machine): %s", url)
        return 2
    photos = sorted(args.photos.glob("*.jpg"))[: args.n_photos]
    if not photos:
        logger.error("no .jpg photos in %s", args.photos)
        return 2
    if request(url + "/healthz", timeout=10)[0] != 200:
        logger.error("no healthy server at %s", url)
        return 2
    floor = model_floor(args.index, args.detector_weights, photos, args.runtime)
    model_ms = floor["detect_ms"] + floor["embed_ms"]
    data = [p.read_bytes() for p in photos]
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if not set(routes) <= {"search", "room"}:
        logger.error("--routes takes search and/or room, got %s", args.routes)
        return 2
    levels = [load_level(url, data, int(c), args.requests, args.timeout, route) for route in routes for c in args.clients.split(",")]
    print(f"model floor on {len(photos)} photos ({floor['detector']}): detect {floor['detect_ms']:.1f} ms + "
          f"embed {floor['embed_ms']:.1f} ms = {model_ms:.1f} ms")
    stage_names = sorted({k for lv in levels for k in lv["stages"]})
    print(f"{'route':>6} {'clients':>7} {'n':>4} {'fail':>4} {'q/s':>6} {'p50 ms':>8} {'p99 ms':>8} {'objects':>7}  "
          + "  ".join(f"{s:>11}" for s in stage_names))
    for lv in levels:
        print(f"{lv['route']:>6} {lv['clients']:>7} {lv['n']:>4} {len(lv['failures']):>4} {lv['qps']:>6.2f} {lv['p50']:>8.1f} {lv['p99']:>8.1f} "
              f"{lv['objects']:>7.0f}  " + "  ".join(f"{lv['stages'].get(s, float('nan')):>11.1f}" for s in stage_names))
    for route in routes:
        mine = [lv for lv in levels if lv["route"] == route]
        one = next((lv for lv in mine if lv["clients"] == 1), mine[0])
        four = next((lv for lv in mine if lv["clients"] == 4), mine[-1])
        if route == "search":
            print(f"search: p50 at 1 client / model floor: {one['p50'] / model_ms:.2f} (goal <= 1.2)")
        else:
            print(f"room: p50 at 1 client {one['p50']:.0f} ms, p99 {one['p99']:.0f} ms (goal p50 <= 1500 ms), "
                  f"{one['objects']:.0f} objects a photo")
        print(f"{route}: p99 / p50 at {four['clients']} clients: {four['p99'] / four['p50']:.2f} (goal <= 2)")
    return 0 if all(not lv["failures"] for lv in levels) else 1


if __name__ == "__main__":
    raise SystemExit(main())

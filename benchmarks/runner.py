"""Embedding a catalog on Ray Data against the in-process path: same vectors, throughput side by side, one run.

    python -m benchmarks.runner --catalog ../shared/data/ikea --model .showroom/registry/showroom/1/model.keras [--workers 2]
    (needs Ray: pip install -r requirements-distributed.txt)

- **in-process**: ``Embedder.load(model)`` then ``embedder(product_images(...))``, as
  ``serving.build_index --runner local`` does (TensorFlow's default thread pools over every core).
- **ray**: ``RayRunner(workers).embed_photos(paths, model)``, as ``--runner ray`` does on one
  machine. Reported twice: the whole call (a local Ray started and stopped, the actors start,
  import TensorFlow and load the model, then embed), and without starting Ray itself (what a build
  on an already running cluster pays).

Prints photos/s of each, their ratio to in-process, and the largest absolute difference of any
vector entry from the in-process vectors (same rows, same order); asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger("benchmarks.runner")


def compare(catalog_dir: Path, model_path: Path, workers: int, threads_per_worker: int, limit: int = 0) -> dict:
    """Wall seconds of each path and the vectors' largest difference: ``{"n", "local_s", "ray_s",
    "ray_start_s", "max_diff", "runner"}``."""
    from engine.index.serving_folder import product_images
    from engine.data.catalog import load_catalog
    from engine.index.ray_runner import RayRunner, _ray
    from engine.model.embedder import Embedder

    products = load_catalog(catalog_dir).products
    products = products[:limit] if limit else products
    for p in products:
        p.image.read_bytes()  # both paths read from the page cache, neither from the disk
    runner = RayRunner(workers=workers, threads_per_worker=threads_per_worker)

    t = time.perf_counter()
    embedder = Embedder.load(model_path)
    local = embedder(product_images(products, embedder.preprocessing))
    local_s = time.perf_counter() - t
    logger.info("in process: %d photos in %.1f s", len(products), local_s)

    ray = _ray()
    t = time.perf_counter()
    runner._start(ray)
    ray_start_s = time.perf_counter() - t
    try:
        distributed = runner.embed_photos([p.image for p in products], model_path)  # Ray is up: the call does not start or stop it
    finally:
        ray.shutdown()
    ray_s = time.perf_counter() - t
    logger.info("ray: %d photos in %.1f s (%.1f s of it starting Ray)", len(products), ray_s, ray_start_s)
    if distributed.shape != local.shape:
        raise RuntimeError(f"ray returned {distributed.shape}, in process {local.shape}")
    return {"n": len(products), "local_s": local_s, "ray_s": ray_s, "ray_start_s": ray_start_s,
            "max_diff": float(np.abs(distributed - local).max()), "runner": runner.describe() | {"ray": ray.__version__}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.runner", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--catalog", type=Path, required=True, help="catalog whose product photos are embedded")
    p.add_argument("--model", type=Path, required=True, help=".keras embedder (e.g. the registry's champion)")
    p.add_argument("--workers", type=int, default=2, help="Ray model actors")
    p.add_argument("--threads-per-worker", type=int, default=0, help="TensorFlow threads per actor (0 = cores // workers)")
    p.add_argument("--limit", type=int, default=0, help="embed only the first N product photos (0: all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from engine.runtime import configure_runtime

    configure_runtime()
    r = compare(args.catalog, args.model, args.workers, args.threads_per_worker, args.limit)
    n, run = r["n"], r["runner"]
    rows = [("in-process (today's --runner local)", r["local_s"]),
            (f"ray, {run['workers']} workers x {run['threads_per_worker']} thread(s), whole call", r["ray_s"]),
            ("ray, without starting Ray", r["ray_s"] - r["ray_start_s"])]
    print(f"{n} photos; Ray {run['ray']}; max |ray - in-process| = {r['max_diff']:.2e}")
    print(f"{'path':<56} {'wall s':>7} {'photos/s':>9} {'vs in-process':>14}")
    for name, seconds in rows:
        print(f"{name:<56} {seconds:>7.1f} {n / seconds:>9.1f} {r['local_s'] / seconds:>14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

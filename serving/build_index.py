"""``python -m serving.build_index``: embed a catalog with a trained model and save its search indexes.

Writes a new generation ``OUT/g-.../`` holding ``products`` (catalog product images), ``scenes``
(detected crops of scenes.csv, for "where is it used?") and ``model.keras`` (the model they were
built with), then points ``OUT/CURRENT`` at it in one atomic step (``engine.generations``): a
server keeps serving the previous generation until it reloads, and a build killed at any moment
leaves it loadable. ``OUT`` is all the app needs: ``SHOWROOM_INDEX=OUT flask --app serving run``.

Each index is tuned to ``--target-recall`` (recall@10 against exact search; ``engine.ann_tuning``):
the products index on the scene crops' embeddings, the scenes index on a sample of its own vectors.
The engine and settings chosen, why, and the measured recall and queries per second are stored in
each index's manifest (``tuning``) and shown by ``/healthz``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from detectors.cache import DetectionCache
from detectors.category_map import load_category_map
from detectors.yolo import YoloDetector, default_weights
from engine.ann import ScannParams
from engine.ann_tuning import TuningConfig
from engine.build_indexes import build_serving_folder
from engine.catalog import load_catalog
from engine.embed import load_preprocessing
from engine.generations import publish_generation
from engine.runtime import run_cli, state_dir
from training.model_ref import resolve_model

logger = logging.getLogger("serving.build_index")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.build_index", description="Build the products and scene-crops indexes of a catalog.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="trained embedder: .keras path or MLflow run id")
    p.add_argument("--catalog", type=Path, required=True, help="catalog directory")
    p.add_argument("--out", type=Path, required=True, help="serving folder: a new generation is built inside it and made current atomically")
    p.add_argument("--keep", type=int, default=3, help="generations kept in --out: the current one and the newest before it")
    p.add_argument("--detector-weights", default=None, help="YOLO weights for scene crops (default: $SHOWROOM_DETECTOR_WEIGHTS, else yolo11n.pt)")
    p.add_argument("--no-detector", action="store_true", help="index whole scenes (and pairs.csv boxes) without a detector")
    t = TuningConfig()
    p.add_argument("--target-recall", type=float, default=t.target_recall,
                   help="recall@10 against exact search each index must reach on its tuning queries; the settings reaching it at the "
                        "highest single-thread throughput are chosen (0 = no tuning: the fixed settings below)")
    p.add_argument("--tuning-queries", type=int, default=t.n_queries, help="at most this many tuning queries per index")
    p.add_argument("--tuning-budget", type=float, default=t.budget_s, help="seconds allowed for building candidate ScaNN trees per index")
    p.add_argument("--seed", type=int, default=t.seed, help="seed of the tuning query sample")
    p.add_argument("--brute-force-below", type=int, default=ScannParams().brute_force_below, help="exact search under this many items, tuned ScaNN above")
    p.add_argument("--leaves", type=int, default=0, help="ScaNN tree leaves (0 = tuned; untuned: about sqrt(N))")
    p.add_argument("--leaves-to-search", type=int, default=0, help="ScaNN leaves searched per query (0 = tuned; untuned: leaves/10, at least 16)")
    p.add_argument("--reorder", type=int, default=0, help="ScaNN exact re-ranking depth (0 = tuned; untuned: 250)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.target_recall <= 1.0:
        parser.error(f"--target-recall must be between 0 and 1, got {args.target_recall}")
    return run_cli(lambda home: _run(args), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    model = resolve_model(args.model)
    catalog = load_catalog(args.catalog)
    detect = None
    if not args.no_detector:
        detector = YoloDetector(args.detector_weights or default_weights(), conf=load_preprocessing(model.path).detector_confidence)
        detect = DetectionCache(detector, state_dir() / "cache" / "detections").detect
    params = ScannParams(brute_force_below=args.brute_force_below, leaves=args.leaves, leaves_to_search=args.leaves_to_search, reorder=args.reorder)
    tuning = (TuningConfig(target_recall=args.target_recall, n_queries=args.tuning_queries, budget_s=args.tuning_budget, seed=args.seed)
              if args.target_recall > 0 else None)
    built: dict = {}

    def write(tmp: Path) -> None:
        built.update(build_serving_folder(model.path, catalog, tmp, detect, params, load_category_map().classes, tuning))

    generation = publish_generation(args.out, write, keep=args.keep)
    for name, index in built.items():
        t = index.tuning
        print(f"{name}: {len(index)} items, {index.index.kind}" + (f" — {t['reason']} (recall@{t['k']} {t['recall']:.3f} on {t['queries']})" if t else ""))
    print(f"built in {time.perf_counter() - t0:.1f}s -> {generation}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m serving.build_index``: embed a catalog with a trained model and save its search indexes.

Writes a new generation ``OUT/g-.../`` holding ``products`` (catalog product images), ``scenes``
(detected crops of scenes.csv, for "where is it used?") and ``model.keras`` (the model they were
built with), then points ``OUT/CURRENT`` at it in one atomic step (``engine.index.generations``): a
server keeps serving the previous generation until it reloads, and a build killed at any moment
leaves it loadable. ``OUT`` is all the app needs: ``SHOWROOM_INDEX=OUT flask --app serving run``.

Each index is tuned to ``--target-recall`` (recall@10 against exact search; ``engine.index.tuning``):
the products index on the scene crops' embeddings, the scenes index on a sample of its own vectors.
The engine and settings chosen, why, and the measured recall and queries per second are stored in
each index's manifest (``tuning``) and shown by ``/healthz``.

``--runner ray``: the product photos and the scene crops (each worker opening its own detector) are
embedded on Ray Data (``engine.index.ray_runner``): ``--workers`` model actors on a local Ray, or on a
cluster with ``--ray-address``; the same vectors as in process, and each manifest records the
runner (``embedded_by``).

``--views MANIFEST``: each product photo's vector is blended with the mean of that product's
synthetic in-room views (``training.synthesize``; ``engine.index.views``): the index keeps one vector
a photo, nearer how the product looks in a room; the products manifest records which views and
weight (``embedded_by.views``).

With ``--add``/``--update``, ``--views MANIFEST`` blends the views of those products alone (made by
``training.synthesize --only PRODUCTS.csv``; their photos embedded afresh), at the weight the index
blends at; each delta's views are recorded with it in the manifest's ``tuning.updates``.

``--add PRODUCTS.csv``, ``--update PRODUCTS.csv``, ``--remove IDS`` change the current generation of
``--out`` instead of embedding the whole catalog (``engine.index.delta``): rows in products.csv's
format (image paths relative to the catalog root) are added or replace a product's rows; only
photos no row holds yet are embedded (vectors are reused by the photo's sha256), and the result is
published as a new generation like any build (the scenes index and model are carried over). The
products index is written *segmented* (``engine.index.segments``): the previous base hard-linked, its
ANN index untouched, the deleted rows and the delta rows beside it, so a 1 % delta of a 1M index
costs seconds, not a rewrite. Once tombstones and delta rows pass ``--compact-above`` of the base
(or with ``--compact``) the delta compacts instead: the whole index loaded, ScaNN changed in place
and its recall@10 against exact search measured again, written flat. ``POST /api/reload`` makes
a running service serve it, with no restart.

``--backend milvus --milvus-uri URI``: the vectors go into new Milvus collections instead
(``<prefix>_<build time>_<hex>_products`` and ``_scenes``, ``engine.index.milvus``), searched by the server;
the folder keeps the model, items and a manifest naming the collections, and records each one's
recall@10 against exact search.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from detectors.cache import cached_detect
from detectors.category_map import load_category_map, map_for_detector
from detectors.yolo import YoloDetector, default_weights
from engine.index.backends import BackendSpec
from engine.index.scann_backend import ScannIndex, ScannParams
from engine.index.tuning import TuningConfig
from engine.calibration import FILE as CALIBRATION_FILE
from engine.data.catalog import CatalogError, check_product_images, load_catalog, read_product_rows
from engine.index.ray_runner import RUNNERS, RayRunner
from engine.index.generations import publish_generation
from engine.index.views import DEFAULT_WEIGHT as VIEWS_WEIGHT
from engine.index.milvus import MilvusIndex, MilvusSettings, unique_collection
from engine.runtime import run_cli, state_dir

logger = logging.getLogger("serving.build_index")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.build_index", description="Build the products and scene-crops indexes of a catalog.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="trained embedder: .keras path or MLflow run id (required for a full build; "
                                                 "with --add/--update/--remove, the current generation's model, which --model must match)")
    p.add_argument("--catalog", type=Path, default=None, help="catalog directory (required for a full build; with --add/--update, where "
                                                              "their image paths are relative to: default, the index's catalog root)")
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
    p.add_argument("--backend", choices=("local", "milvus"), default="local",
                   help="local: exact search or ScaNN in the index folder; milvus: the vectors in Milvus collections, searched by Milvus")
    p.add_argument("--milvus-uri", default=None, help="with --backend milvus: a Milvus Lite file (path ending in .db, one process at a time) "
                                                      "or a server, http://host:19530 (token from $SHOWROOM_MILVUS_TOKEN)")
    p.add_argument("--milvus-prefix", default="showroom", help="collection name prefix; each build fills new collections PREFIX_<build>_products "
                                                               "and PREFIX_<build>_scenes, so a served generation keeps its own")
    p.add_argument("--milvus-index-type", default="FLAT", help="Milvus vector index: FLAT (exact), or on a server HNSW, IVF_FLAT, IVF_PQ, SCANN ...")
    p.add_argument("--milvus-index-params", type=json.loads, default={}, help='JSON build parameters of that index, e.g. \'{"M": 16, "efConstruction": 200}\'')
    p.add_argument("--milvus-search-params", type=json.loads, default={}, help='JSON per-query parameters, e.g. \'{"ef": 64}\' or \'{"nprobe": 16}\'')
    p.add_argument("--runner", choices=RUNNERS, default="local",
                   help="where the product photos are embedded: local = in this process; ray = on Ray Data model actors "
                        "(pip install -r requirements-distributed.txt); the scene crops are embedded in this process either way")
    p.add_argument("--workers", type=int, default=2, help="with --runner ray: model actors (each loads the model once)")
    p.add_argument("--threads-per-worker", type=int, default=0,
                   help="with --runner ray: TensorFlow threads (and Ray CPUs) per actor; 0 = this machine's cores // --workers")
    p.add_argument("--ray-address", default=None,
                   help="with --runner ray: an existing cluster ('auto' on a cluster node, or ray://head:10001); default: a local Ray "
                        "on --workers x --threads-per-worker CPUs. Cluster workers must see the catalog and the model at the same paths")
    p.add_argument("--views", type=Path, default=None, metavar="MANIFEST",
                   help="synthetic in-room views of the products (python -m training.synthesize): each photo's vector is blended with "
                        "its product's views (engine.index.views); with --add/--update, the views of those products "
                        "(training.synthesize --only PRODUCTS.csv), else their rows are their photos alone")
    p.add_argument("--views-weight", type=float, default=None,
                   help=f"with --views: the views' mean's weight in the blend, > 0 (default: {VIEWS_WEIGHT}; for a delta, the weight the index blends at)")
    p.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                   help="the model's match calibrator (python -m evaluation.evaluate --fit-calibration on development scenes): served "
                        "with the generation, each result then carries P(same product) and a weak best match is answered 'no close "
                        "match in the catalog'; alone (no --model/--catalog) it makes the next generation from the current one with "
                        "this calibrator; with --add/--update/--remove it replaces the current one, else that is carried over")
    d = p.add_argument_group("in-place update of the current generation (no full build)")
    d.add_argument("--add", type=Path, default=None, metavar="PRODUCTS.csv", help="rows of new products, in products.csv's format")
    d.add_argument("--update", type=Path, default=None, metavar="PRODUCTS.csv",
                   help="rows replacing every row of existing products (a new photo, name, type or fields), in products.csv's format")
    d.add_argument("--remove", default=None, metavar="IDS", help="product ids to remove: comma-separated, or @FILE with one id per line")
    d.add_argument("--compact", action="store_true",
                   help="write the products index flat again (one ANN index of the live rows) instead of a segment; alone (no --model/"
                        "--catalog), the next generation is the current one compacted")
    d.add_argument("--compact-above", type=float, default=None, metavar="SHARE",
                   help="a delta compacts once deleted and added rows pass this share of the base index's rows (default 0.1)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.target_recall <= 1.0:
        parser.error(f"--target-recall must be between 0 and 1, got {args.target_recall}")
    if (args.backend == "milvus") != bool(args.milvus_uri):
        parser.error("--milvus-uri goes with --backend milvus, and --backend milvus needs --milvus-uri")
    if args.runner == "local" and (args.ray_address or args.threads_per_worker):
        parser.error("--ray-address and --threads-per-worker go with --runner ray")
    if args.workers < 1 or args.threads_per_worker < 0:
        parser.error("--workers must be at least 1 and --threads-per-worker at least 0")
    delta = args.add or args.update or args.remove is not None or ((args.calibration or args.compact) and not args.model and not args.catalog)
    if delta:
        if args.backend != "local" or args.runner != "local" or args.no_detector or args.detector_weights:
            parser.error("--add/--update/--remove change the current generation's products index: they go without --backend, "
                         "--runner, --no-detector and --detector-weights (the scenes index is carried over)")
        if args.views and not (args.add or args.update):
            parser.error("--views with a delta blends the views of the products --add/--update bring: give one of them")
    if args.views_weight is not None and not args.views_weight > 0:
        parser.error(f"--views-weight must be > 0, got {args.views_weight}")
    if args.views_weight is not None and not args.views:
        parser.error("--views-weight goes with --views")
    if delta:
        return run_cli(lambda home: _run_delta(args), verbose=args.verbose, logger_name=logger.name)
    if not args.model or not args.catalog:
        parser.error("a full build needs --model and --catalog (or give --add/--update/--remove to change the current generation)")
    return run_cli(lambda home: _run(args), verbose=args.verbose, logger_name=logger.name)


def backend_spec(args: argparse.Namespace) -> BackendSpec:
    """The one ``BackendSpec`` the backend flags describe: ``--backend local`` is the ``scann`` backend
    (exact search under ``--brute-force-below`` items, ScaNN above, its knobs from the flags; tuned
    with ``--target-recall``); ``--backend milvus`` fills new collections named ``<--milvus-prefix>_<build>``."""
    if args.backend == "milvus":
        return BackendSpec(MilvusIndex.kind, MilvusSettings(args.milvus_uri, unique_collection(args.milvus_prefix), args.milvus_index_type.upper(),
                                                            args.milvus_index_params, args.milvus_search_params))
    return BackendSpec(ScannIndex.kind, ScannParams(brute_force_below=args.brute_force_below, leaves=args.leaves,
                                                    leaves_to_search=args.leaves_to_search, reorder=args.reorder))


def _run(args: argparse.Namespace) -> int:
    # these load TensorFlow: imported here, once run_cli has set the environment
    from engine.index.serving_folder import build_serving_folder
    from engine.model.embedder import load_preprocessing
    from training.model_ref import resolve_model
    from training.synthesis import synthetic_views

    t0 = time.perf_counter()
    backend = backend_spec(args)
    model = resolve_model(args.model)
    catalog = load_catalog(args.catalog)
    views = synthetic_views(args.views, catalog, args.views_weight or VIEWS_WEIGHT) if args.views else None  # checked before any embedding
    open_detect = None
    classes = load_category_map().classes
    if not args.no_detector:
        weights = args.detector_weights or default_weights()
        open_detect = partial(cached_detect, weights, load_preprocessing(model.path).detector_confidence, state_dir() / "cache" / "detections")
        classes = map_for_detector(YoloDetector(weights).class_names, check=False).classes  # the groups map for a detector of the product groups
    tuning = (TuningConfig(target_recall=args.target_recall, n_queries=args.tuning_queries, budget_s=args.tuning_budget, seed=args.seed)
              if args.target_recall > 0 else None)
    runner = (RayRunner(workers=args.workers, threads_per_worker=args.threads_per_worker, address=args.ray_address)
              if args.runner == "ray" else None)
    detect = open_detect() if open_detect is not None and runner is None else None  # a runner's workers open their own
    built: dict = {}

    def write(tmp: Path) -> None:
        built.update(build_serving_folder(model.path, catalog, tmp, detect, backend, classes, tuning, runner, open_detect, views))
        if args.calibration:
            _calibrate(args.calibration, tmp)

    generation = publish_generation(args.out, write, keep=args.keep)
    for name, index in built.items():
        t = index.tuning
        print(f"{name}: {len(index)} items, {index.index.kind}" + (f" — {t['reason']} (recall@{t['k']} {t['recall']:.3f} on {t['queries']})" if t else ""))
    print(f"built in {time.perf_counter() - t0:.1f}s -> {generation}")
    return 0


def _removed_ids(text: str | None) -> tuple[str, ...]:
    """``--remove``: comma-separated ids, or ``@FILE`` with one id per line (``#`` comments)."""
    if text is None:
        return ()
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CatalogError(f"--remove {text}: cannot read {path} ({exc})") from None
        ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise CatalogError(f"--remove {text!r} names no product ids")
    return tuple(dict.fromkeys(ids))


def _run_delta(args: argparse.Namespace) -> int:
    """Change the current generation of ``--out`` by the delta flags and publish the result as the next one."""
    from engine.index.delta import CatalogDelta, DeltaError
    from engine.index.generations import current_generation, resolve_serving_folder
    from engine.index.catalog_index import read_manifest
    from engine.index.segments import COMPACT_ABOVE
    from engine.model.embedder import Embedder, model_fingerprint
    from serving.catalog_update import publish_delta
    from training.model_ref import resolve_model
    from training.synthesis import delta_views

    t0 = time.perf_counter()
    if current_generation(args.out) is None:
        raise DeltaError(f"{args.out} has no current generation to change; build one first with --model and --catalog")
    current = resolve_serving_folder(args.out)
    root = Path(args.catalog or read_manifest(current / "products").get("catalog_root") or ".").resolve()

    def rows(csv: Path | None) -> tuple:  # validated as a catalog's rows: every photo found, decodable, hashed once
        return tuple(check_product_images(read_product_rows(csv, root)[0], csv)) if csv else ()

    add, update = rows(args.add), rows(args.update)
    views = None
    if args.views:  # checked before any embedding; at the weight the index blends at unless given
        built = (read_manifest(current / "products").get("embedded_by") or {}).get("views")
        views = delta_views(args.views, add + update, args.views_weight or (built["weight"] if built else VIEWS_WEIGHT))
    delta = CatalogDelta(add=add, update=update, remove=_removed_ids(args.remove), views=views)
    generation, report = publish_delta(
        args.out, delta, lambda folder, model: Embedder.load(folder / "model.keras"),
        model=model_fingerprint(resolve_model(args.model).path) if args.model else None,
        calibrate=(lambda tmp: _calibrate(args.calibration, tmp)) if args.calibration else None, compact=args.compact,
        compact_above=COMPACT_ABOVE if args.compact_above is None else args.compact_above, target_recall=args.target_recall or 0.95,
        n_queries=min(200, args.tuning_queries), seed=args.seed, keep=args.keep)
    recall = f", recall@10 {report['recall']:.3f} on {report['recall_queries']} queries" if report["recall"] is not None else ""
    recall += f"; calibration {args.calibration}" if args.calibration else ""
    recall += (f"; {report['views']['views']} in-room views of {report['views']['products']} products blended (weight "
               f"{report['views']['weight']:g})") if report.get("views") else ""
    recall += (f"; {report['without_views']} product(s) without views in an index that blends them: their photos alone "
               "(--views MANIFEST from python -m training.synthesize --only PRODUCTS.csv blends them)") if report.get("without_views") else ""
    print(f"products: +{report['products_added']} ~{report['products_updated']} -{report['products_removed']} "
          f"({report['rows_before']} -> {report['rows_after']} rows); {report['embedded']} photos embedded, {report['reused']} reused; "
          f"{report['method']}{recall}")
    print(f"updated {report['source']} in {time.perf_counter() - t0:.1f}s -> {generation}  (POST /api/reload to serve it)")
    return 0


def _calibrate(path: Path, generation: Path) -> None:
    """The calibrator at ``path`` into the generation being written, refused unless fitted on its model."""
    from engine.calibration import MatchCalibrator
    from engine.model.embedder import model_fingerprint

    cal = MatchCalibrator.load(path, model_fingerprint=model_fingerprint(generation / "model.keras"))
    cal.save(generation / CALIBRATION_FILE)
    logger.info("calibration %s (threshold %.3f) served with this generation", path, cal.threshold)



if __name__ == "__main__":
    raise SystemExit(main())

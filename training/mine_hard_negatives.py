"""``python -m training.mine_hard_negatives``: refresh a triplet manifest with a trained model's hard negatives.

Embeds every catalog product image and every positive's query crop with the model, takes each
positive's pool of most confusable products (``training.hard_negatives``), and writes a new
manifest whose negatives mix hard ones (sampled from the pool) and random ones, at
``--hard-ratio``. Logs to MLflow the mean d(q, n) of hard vs random negatives, the share of
triplets that violate the margin, and counts.

One round of the loop::

    python -m training.mine_triplets --catalog DIR --out mined.json ...
    python -m training.fit --triplets mined.json ...                       # run A
    python -m training.mine_hard_negatives --model A --triplets mined.json --out hard.json
    python -m training.fit --triplets hard.json --init-from A ...          # run B
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.data.catalog import load_catalog
from engine.data.splits import read_product_list, restrict_products
from engine.files import file_sha256
from engine.data.images import load_image, query_crop
from engine.runtime import run_cli
from training.hard_negatives import HardNegativeConfig, hard_negative_pools, refresh_negatives
from training.manifest import Manifest, load_manifest, save_manifest
from training.tracking import mlflow_run

if TYPE_CHECKING:
    from engine.model.embedder import Embedder
    from training.query_sources import QueryItem

logger = logging.getLogger("training.mine_hard_negatives")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.mine_hard_negatives",
        description="Find each positive's most confusable products with a trained embedder and write a refreshed triplet manifest.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="trained embedder: .keras path or MLflow run id of training.fit")
    p.add_argument("--triplets", type=Path, required=True, help="manifest whose positives get new negatives")
    p.add_argument("--out", type=Path, required=True, help="where to write the refreshed manifest")
    p.add_argument("--catalog", type=Path, default=None, help="catalog directory (default: the manifest's)")
    p.add_argument("--holdout-products", type=Path, default=None, metavar="FILE",
                   help="product list of new products (python -m evaluation.holdout --new-products): their positives are dropped and they are "
                        "never a negative; recorded in the manifest, so training.fit holds them out too. Products the input manifest was "
                        "made without stay held out")
    p.add_argument("--pool", type=int, default=100, help="most confusable products kept per positive (100-1000 on a real catalog)")
    p.add_argument("--negatives-per-positive", type=int, default=24, help="negatives listed per positive (fit samples from them each epoch)")
    p.add_argument("--hard-ratio", type=float, default=0.5, help="share of a positive's listed negatives that are hard (the rest random)")
    p.add_argument("--dup-distance", type=float, default=0.05, help="embedding distance under which another product counts as the same item")
    p.add_argument("--crop-padding", type=float, default=None, help="padding around query boxes, fraction of the longer side (default: the model's)")
    p.add_argument("--margin", type=float, default=1.0, help="margin m for the share of margin-violating triplets")
    p.add_argument("--seed", type=int, default=1234, help="seed for sampling from the pools and random negatives")
    p.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.hard_ratio <= 1:
        parser.error("--hard-ratio must be in [0, 1]")
    return run_cli(lambda home: _run(args, home), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace, home: Path) -> int:
    # these load TensorFlow: imported here, once run_cli has set the environment
    from engine.index.serving_folder import product_images
    from engine.model.embedder import Embedder
    from training.model_ref import resolve_model
    from training.query_sources import queries_from_manifest

    t0 = time.perf_counter()
    manifest = load_manifest(args.triplets)
    catalog = load_catalog(args.catalog or manifest.catalog)
    queries = queries_from_manifest(manifest, catalog)
    held = set(manifest.holdout_products) | (set(read_product_list(args.holdout_products)) if args.holdout_products else set())
    positives = manifest.positives
    if held:
        catalog = restrict_products(catalog, held)  # the pools and the random negatives see only the products that exist
        keep = [i for i, q in enumerate(queries) if q.product_id not in held]
        logger.info("holding out %d products: %d of %d positives are theirs and are dropped", len(held), len(queries) - len(keep), len(queries))
        queries, positives = [queries[i] for i in keep], [positives[i] for i in keep]
    embedder = Embedder.load(resolve_model(args.model).path)
    padding = embedder.preprocessing.crop_padding if args.crop_padding is None else args.crop_padding
    logger.info("embedding %d catalog images and %d queries", len(catalog.products), len(queries))
    image_emb = embedder(product_images(catalog.products, embedder.preprocessing))
    image_products = [p.product_id for p in catalog.products]
    image_hashes = [file_sha256(p.image) for p in catalog.products]
    query_emb = _embed_queries(embedder, queries, padding)
    cfg = HardNegativeConfig(pool=args.pool, dup_distance=args.dup_distance)
    pools = hard_negative_pools(query_emb, [q.product_id for q in queries], image_emb, image_products, image_hashes, catalog.types, cfg)
    n_hard = round(args.hard_ratio * args.negatives_per_positive)
    positives, stats = refresh_negatives(positives, query_emb, pools, image_emb, image_products, catalog.types,
                                         n_hard=n_hard, n_random=args.negatives_per_positive - n_hard, margin=args.margin,
                                         rng=np.random.default_rng(args.seed))
    stats.update(pool=args.pool, seconds=time.perf_counter() - t0)
    out = Manifest(
        catalog=manifest.catalog, catalog_fingerprint=manifest.catalog_fingerprint, positives=positives,
        producer={"tool": "training.mine_hard_negatives", "model": args.model, "from": str(args.triplets),
                  "pool": args.pool, "hard_ratio": args.hard_ratio, "negatives_per_positive": args.negatives_per_positive,
                  "dup_distance": args.dup_distance, "seed": args.seed, "crop_padding": padding, "parent": manifest.producer,
                  "holdout_scenes": list(manifest.holdout_scenes), "holdout_products": sorted(held)},
        stats={**manifest.stats, "hard_negatives": stats},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    save_manifest(out, args.out)
    line = (f"hard negatives: mean d(q,n) hard {stats['mean_d_hard']:.4f} vs random {stats['mean_d_random']:.4f}; "
            f"margin violated by {stats['margin_violations_hard']:.1%} of hard and {stats['margin_violations_random']:.1%} of random "
            f"triplets; {stats['hard_negatives']} hard + {stats['random_negatives']} random negatives for {stats['positives']} positives "
            f"in {stats['seconds']:.1f}s -> {args.out}")
    if not args.no_mlflow:
        line += "\n" + _log_run(args, out, manifest, stats)
    print(line)
    return 0


def _embed_queries(embedder: Embedder, queries: list[QueryItem], padding: float) -> np.ndarray:
    """float32 (Q, D): each query's padded crop, decoded once per scene (queries are grouped by scene)."""
    crops: dict[tuple, np.ndarray] = {}
    loaded: dict[Path, np.ndarray] = {}
    for q in queries:
        key = (q.image, q.box)
        if key not in crops:
            if q.image not in loaded:
                loaded = {q.image: load_image(q.image)}  # keep one scene decoded
            crops[key] = query_crop(loaded[q.image], q.box, embedder.size, padding)
    keys = list(crops)
    crop_emb = embedder(np.stack([crops[k] for k in keys]))
    row = {k: i for i, k in enumerate(keys)}
    return crop_emb[[row[(q.image, q.box)] for q in queries]]


def _log_run(args: argparse.Namespace, out: Manifest, source: Manifest, stats: dict) -> str:
    with mlflow_run(run_name="mine-hard-negatives") as tracker:
        tracker.set_tags({"showroom.kind": "mine_hard_negatives", "showroom.model": args.model})
        tracker.log_params({k: v for k, v in out.producer.items() if k not in ("parent", "holdout_scenes", "holdout_products")})
        tracker.log_params({"holdout_scenes": len(source.holdout_scenes), "holdout_products": len(out.holdout_products)})
        tracker.log_metrics({k: v for k, v in stats.items() if isinstance(v, (int, float))}, step=0)
        tracker.log_artifact(args.out, "manifest")
        return f"MLflow run {tracker.run_id}"


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m training.mine_triplets``: mine a triplet manifest from raw catalog photos.

White-background test on every image, YOLO detections of the mapped class in each scene (cached;
or, with ``--proposals``, hand-drawn boxes of the product groups in their place), the crop most
similar to the product's iconic image, sampled negatives. Writes a versioned manifest atomically,
prints per-category stats and logs them with a contact sheet to MLflow.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from detectors.category_map import GROUPS_MAP, load_category_map, map_for_detector
from detectors.drawn import DrawnBoxes
from detectors.yolo import YoloDetector, default_weights
from engine.data.catalog import load_catalog
from engine.config import BACKBONES, ModelConfig
from engine.data.iconic import IconicTest
from engine.runtime import run_cli
from engine.data.splits import read_scene_list, restrict_scenes
from training.manifest import Manifest, save_manifest
from training.mining import DROP_REASONS, MiningConfig, MiningResult, contact_sheet, mine_catalog
from training.tracking import mlflow_run

if TYPE_CHECKING:
    from engine.model.embedder import Embedder

logger = logging.getLogger("training.mine_triplets")


def build_parser() -> argparse.ArgumentParser:
    d = MiningConfig()
    p = argparse.ArgumentParser(
        prog="python -m training.mine_triplets",
        description="Mine (query crop, product, negatives) triplets from a catalog's scenes with a detector.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--catalog", type=Path, required=True, help="catalog directory (products.csv, scenes.csv, pairs.csv)")
    p.add_argument("--out", type=Path, default=None, help="manifest path (default: <state>/mined/<catalog>-<fingerprint>.json)")
    p.add_argument("--detector-weights", default=None, help="(default: $SHOWROOM_DETECTOR_WEIGHTS, else yolo11n.pt) YOLO .pt/.onnx/.tflite file, or a bare Ultralytics name to download")
    p.add_argument("--proposals", type=Path, nargs="+", default=None, metavar="BOXES",
                   help="hand-drawn boxes (showroom.boxes files) propose each scene's crops instead of a detector, each sure and "
                        "labelled by its product group: real pairs of every group mined with no trained detector (a scene with pairs "
                        "and no drawn box gives none; the count is logged)")
    p.add_argument("--holdout-scenes", type=Path, default=None, help="scene list (python -m evaluation.holdout) whose pairs are not mined: kept for evaluation; recorded in the manifest so training.fit excludes them too")
    p.add_argument("--category-map", type=Path, default=None, help="YAML map of catalog types to detector classes (default: detectors/product_groups.yaml for a detector of the product groups, else detectors/category_map.yaml)")
    p.add_argument("--model", default=None, help="embedder (.keras path or MLflow run id) that picks among several crops; default: pretrained backbone features")
    p.add_argument("--backbone", default="mobilenet_v2", help=f"backbone of the pretrained features when --model is not given: {', '.join(BACKBONES)} or a keras.applications class name")
    p.add_argument("--weights", default="imagenet", help="weights of that backbone: 'imagenet', or a .weights.h5 path")
    p.add_argument("--image-size", type=int, default=128, help="crop side for the similarity embedding and the contact sheet")
    p.add_argument("--min-confidence", type=float, default=d.min_confidence, help="detector confidence a crop needs")
    p.add_argument("--fill-confidence", type=float, default=d.fill_confidence, help="a mapped class with no crop at --min-confidence in a scene may use its best one down to this score (0 = off)")
    p.add_argument("--min-area", type=float, default=d.min_area, help="minimum crop area as a share of the scene")
    p.add_argument("--crop-padding", type=float, default=d.crop_padding, help="padding around a crop, fraction of its longer side")
    p.add_argument("--in-class-negatives", type=int, default=d.in_class_negatives, help="negatives per positive from its category")
    p.add_argument("--out-class-negatives", type=int, default=d.out_class_negatives, help="negatives per positive from other categories")
    p.add_argument("--white-level", type=int, default=d.iconic.white_level, help="white-background test: darkest channel level of a white pixel")
    p.add_argument("--white-share", type=float, default=d.iconic.min_white_share, help="white-background test: share of white border pixels for 'iconic'")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for negative sampling and the contact sheet")
    p.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda home: _run(args, home), verbose=args.verbose, logger_name=logger.name)


def make_embedder(args: argparse.Namespace) -> Embedder:
    """The embedding that chooses among several crops: a trained embedder, or pretrained features."""
    # these load TensorFlow: imported here, once run_cli has set the environment
    from engine.model.embedder import Embedder
    from training.model_ref import resolve_model

    if args.model:
        embedder = Embedder.load(resolve_model(args.model).path)
    else:
        embedder = Embedder.imagenet(ModelConfig(backbone=args.backbone, weights=args.weights, image_size=args.image_size))
    return replace(embedder, name=args.model or f"{args.backbone}:{args.weights}")


def _run(args: argparse.Namespace, home: Path) -> int:
    cfg = MiningConfig(
        min_confidence=args.min_confidence, fill_confidence=args.fill_confidence, min_area=args.min_area, crop_padding=args.crop_padding,
        in_class_negatives=args.in_class_negatives, out_class_negatives=args.out_class_negatives, seed=args.seed,
        iconic=IconicTest(white_level=args.white_level, min_white_share=args.white_share),
    )
    catalog = load_catalog(args.catalog)
    holdout = read_scene_list(args.holdout_scenes) if args.holdout_scenes else ()
    if args.proposals and args.detector_weights:
        raise ValueError("--proposals replaces the detector: give --proposals or --detector-weights, not both")
    if args.proposals:
        mined = restrict_scenes(catalog, drop=holdout) if holdout else catalog  # only the mined scenes need their boxes
        detector = DrawnBoxes.for_catalog(args.proposals, mined, load_category_map(GROUPS_MAP).groups, every_scene=False)
    else:
        detector = YoloDetector(args.detector_weights or default_weights(), conf=cfg.detector_confidence)
    cmap = map_for_detector(detector.class_names, args.category_map)  # the product groups for a detector of them, else COCO's
    manifest, result = mine_catalog(catalog, detector, cmap, cfg, embedder=make_embedder(args),
                                    cache_dir=home / "cache" / "detections", holdout=holdout)
    out = args.out or home / "mined" / f"{catalog.root.name}-{catalog.fingerprint}.json"
    save_manifest(manifest, out)
    tot = manifest.stats["totals"]
    table = _table(result.stats, tot)
    ic = result.iconic
    summary = (
        f"white-background test: {ic['products_iconic']}/{ic['products']} product images iconic ({ic['products_iconic_share']:.2%}), "
        f"{ic['scenes_lifestyle']}/{ic['scenes']} scenes lifestyle ({ic['scenes_lifestyle_share']:.2%})\n"
        f"mined {len(result.positives)} positives ({tot['kept']} from {tot['pairs']} pairs, "
        f"{sum(p.source == 'product_lifestyle' for p in result.positives)} lifestyle product images) in {manifest.stats['seconds']:.1f}s -> {out}"
    )
    if not args.no_mlflow:
        summary += "\n" + _log_run(manifest, result, cfg, table, summary, out)
    print(table)
    print(summary)
    if ic["products_judged_lifestyle"] or ic["scenes_judged_iconic"]:
        print("misjudged by the white-background test:")
        for f in ic["products_judged_lifestyle"]:
            print(f"  product judged lifestyle: {f}")
        for f in ic["scenes_judged_iconic"]:
            print(f"  scene judged iconic: {f}")
    return 0


def _log_run(manifest: Manifest, result: MiningResult, cfg: MiningConfig, table: str, summary: str, out: Path) -> str:
    """One MLflow run with the mining params, counts, contact sheet, stats and the manifest; a line naming it."""
    producer, ic = manifest.producer, result.iconic
    with mlflow_run(run_name=f"mine-{Path(manifest.catalog).name}") as tracker, tempfile.TemporaryDirectory() as tmp:
        tracker.set_tags({"showroom.kind": "mine_triplets", "showroom.catalog": Path(manifest.catalog).name})
        tracker.log_params({"catalog": manifest.catalog, "catalog_fingerprint": manifest.catalog_fingerprint, "detector": producer["detector"],
                            "category_map_version": producer["category_map_version"], "min_confidence": cfg.min_confidence,
                            "min_area": cfg.min_area, "crop_padding": cfg.crop_padding, "seed": cfg.seed, "model": producer["model"],
                            "white_level": cfg.iconic.white_level, "white_share": cfg.iconic.min_white_share,
                            "holdout_scenes": len(producer["holdout_scenes"])})
        metrics = {f"total_{k}": v for k, v in manifest.stats["totals"].items()}
        metrics.update({"positives": len(result.positives), "seconds": manifest.stats["seconds"],
                        "products_iconic_share": ic["products_iconic_share"], "scenes_lifestyle_share": ic["scenes_lifestyle_share"]})
        tracker.log_metrics(metrics, step=0)
        tmp = Path(tmp)
        cv2.imwrite(str(tmp / "contact_sheet.png"), cv2.cvtColor(contact_sheet(result.samples), cv2.COLOR_RGB2BGR))
        (tmp / "stats.txt").write_text(table + "\n" + summary + "\n")
        for name in ("contact_sheet.png", "stats.txt"):
            tracker.log_artifact(tmp / name)
        tracker.log_artifact(out, "manifest")
        return f"MLflow run {tracker.run_id}: artifacts contact_sheet.png, stats.txt, manifest/{out.name}"


def _table(stats: dict[str, dict[str, int]], tot: dict[str, int]) -> str:
    cols = ("pairs", "reachable", "kept", *DROP_REASONS)
    rows = [(t, c) for t, c in stats.items() if c.get("pairs")]
    width = max([len(t) for t, _ in rows] + [8])
    head = f"{'type':<{width}} " + " ".join(f"{c:>{max(len(c), 5)}}" for c in cols)
    lines = [head, "-" * len(head)]
    for t, c in sorted(rows, key=lambda r: (-r[1].get("reachable", 0), -r[1].get("pairs", 0), r[0])):
        lines.append(f"{t:<{width}} " + " ".join(f"{c.get(k, 0):>{max(len(k), 5)}}" for k in cols))
    lines.append(f"{'TOTAL':<{width}} " + " ".join(f"{tot.get(k, 0):>{max(len(k), 5)}}" for k in cols))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

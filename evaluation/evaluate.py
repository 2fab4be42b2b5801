"""``python -m evaluation.evaluate``: recall@k of a model on a catalog's room photos, against the
ImageNet baseline, logged to MLflow with plots. The protocol is in ``evaluation/protocol.py`` and
docs/evaluation.md ("The protocol").
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from detectors.cache import DetectionCache
from detectors.category_map import DEFAULT_MAP, GROUPS_MAP, CategoryMap, label_groups, load_category_map, map_for_detector
from detectors.drawn import DrawnBoxes
from detectors.yolo import YoloDetector, default_weights
from engine.data.catalog import Catalog, CatalogError, load_catalog
from engine.config import BACKBONES, CATALOG_DECODES, DEFAULT_CROP_PADDING, DEFAULT_MIN_CONFIDENCE, ModelConfig, Preprocessing
from engine.files import write_json_atomic
from engine.metrics import euclidean_distances, group_min
from engine.runtime import run_cli
from engine.index.hubness import DEFAULT_K as HUB_K
from engine.index.views import DEFAULT_WEIGHT as VIEWS_WEIGHT, ProductViews, view_crops
from engine.search import ROOM_ORDER, ROOM_ORDERS
from engine.data.images import query_crop
from engine.data.proposals import catalog_proposals
from engine.data.splits import read_product_list, read_scene_list, restrict_scenes
from evaluation import plots
from evaluation.detection import DetectionRecorder, RecordedDetections
from evaluation.protocol import (CROP_CHOICES, P2S_CROPS, EvalConfig, EvalInputs, EvalResult, choose_query_crops, flat_metrics,
                                 paired_difference, prepare, score, table)
from evaluation.room import RoomSpec, paired_room_difference
from training.manifest import read_seen_products
from training.tracking import download_artifact, git_commit, metric_key, mlflow_run, run_params, run_tags

if TYPE_CHECKING:
    from engine.model.embedder import Embedder

logger = logging.getLogger("evaluation.evaluate")

# The ImageNet features that fix each pair's query box (``--crop-choice imagenet``): the same for every model compared.
CHOICE_MODEL = ModelConfig(backbone="mobilenet_v2", alpha=0.35, image_size=224)

# Params every fit and evaluate run carries under the same names (the mlflow ui columns).
KEY_PARAMS = ("model.backbone", "model.weights", "model.image_size", "model.embedding_dim", "model.low_level_branch",
              "train.loss", "train.epochs", "triplets", "init_from", "holdout_scenes")


def build_parser() -> argparse.ArgumentParser:
    d = EvalConfig()
    p = argparse.ArgumentParser(
        prog="python -m evaluation.evaluate",
        description="Evaluate a model on a catalog: scene → product and product → scene recall@k, distance accuracy, "
                    "against the ImageNet baseline; writes JSON, plots and an MLflow run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--catalog", type=Path, required=True, help="catalog directory (products.csv, scenes.csv, pairs.csv)")
    p.add_argument("--model", required=True, help="'imagenet' (pooled ImageNet features, no training), a .keras path, an MLflow run id, or models:/NAME@ALIAS")
    p.add_argument("--scenes", type=Path, default=None, help="evaluate only these scenes: a scene list (python -m evaluation.holdout) or a training split.json (its val scenes)")
    p.add_argument("--detector-weights", default=None, help="YOLO weights proposing the crops of pairs without boxes (default: $SHOWROOM_DETECTOR_WEIGHTS, else yolo11n.pt)")
    p.add_argument("--category-map", type=Path, default=None,
                   help="catalog type → detector class map (default: the product-groups map for a detector of the groups, else detectors/category_map.yaml)")
    p.add_argument("--groups-map", type=Path, default=None, help="catalog type → product group map of the whole-room scores (default: detectors/product_groups.yaml)")
    p.add_argument("--versus-detector", default=None, metavar="WEIGHTS",
                   help="also propose the crops with this second detector and score the same model(s) on them: the whole-room "
                        "scores of both detectors, paired pair by pair (e.g. the COCO detector against a product-groups one)")
    p.add_argument("--proposals", type=Path, nargs="+", default=None, metavar="BOXES",
                   help="hand-drawn boxes (showroom.boxes files, together covering every evaluated scene) propose the crops instead of the "
                        "detector, each sure and labelled by its group: the whole-room scores of a detector that finds exactly "
                        "them; with --versus-detector, that detector's cost pair by pair")
    p.add_argument("--detections", type=Path, default=None, metavar="RECORD",
                   help="propose exactly the boxes an earlier evaluation's detector found (its detections.json) instead of running "
                        "the detector: that figure reproduced on a machine whose detector runtime boxes differ")
    p.add_argument("--hub-beta", type=float, default=0.0,
                   help="> 0: rank products by distance minus this share of their room density, their mean distance to their "
                        "--hub-k nearest crops of the catalog's other room photos (engine.index.hubness; the service's "
                        "SHOWROOM_HUB_BETA); also scores the model without it, pair by pair")
    p.add_argument("--p2s-crops", choices=P2S_CROPS, default="group",
                   help="'where is it used?' (product -> scene) ranks scenes by their crops of the product's group, a scene with "
                        "none after those with one, as the service answers it (default); 'every': by every crop, as before")
    p.add_argument("--p2s-windows", action=argparse.BooleanOptionalAction, default=True,
                   help="'where is it used?' also over each scene's 14 fixed windows, as crops of no group, as the service's "
                        "scenes index holds them (default); --no-p2s-windows: the proposed crops alone, as before")
    p.add_argument("--hub-k", type=int, default=HUB_K, help="reference room crops averaged per product for its room density")
    p.add_argument("--hub-exclude", type=Path, default=None, metavar="SCENES",
                   help="scenes never used as reference room photos besides the evaluated ones (e.g. the README hold-out "
                        "when evaluating development scenes)")
    p.add_argument("--catalog-views", type=Path, default=None, metavar="MANIFEST",
                   help="synthetic in-room views of the catalog's products (python -m training.synthesize): each photo's vector "
                        "blended with its product's views (engine.index.views; as build_index --views); views pasted into an "
                        "evaluated scene are left out; also scores the model without them, pair by pair")
    p.add_argument("--views-weight", type=float, default=VIEWS_WEIGHT,
                   help="the views' mean's weight in the blend, > 0 (chosen on IKEA's development folds)")
    p.add_argument("--room-order", choices=ROOM_ORDERS, default=ROOM_ORDER,
                   help="how the room list merges its objects' matches: 'confidence' (an object's r-th match at r / its detector confidence), "
                        "'turns' (each object's first, then each second …) or 'distance' (nearest first)")
    p.add_argument("--boxes", choices=("page", "all"), default="page",
                   help="detector boxes scored: 'page', those the page offers a shopper (product groups only, de-duplicated, capped: "
                        "engine.data.proposals.page_boxes), or 'all' confident ones (the older protocol)")
    p.add_argument("--crop-choice", choices=CROP_CHOICES, default="imagenet",
                   help="how one query box is fixed per pair among several candidates, before any model is scored: 'imagenet' "
                        "(nearest to the product in ImageNet features), 'confidence' (the most confident), or 'best' (no choice: "
                        "the best rank over them, the older protocol)")
    p.add_argument("--crop-choice-weights", default=None,
                   help=f"weights of the crop choice's ImageNet features ({CHOICE_MODEL.backbone} α {CHOICE_MODEL.alpha}, "
                        f"{CHOICE_MODEL.image_size} px): 'imagenet', a .weights.h5 path or 'none' (default: --weights when the "
                        "evaluated backbone is that one, else 'imagenet')")
    p.add_argument("--baseline", default="imagenet", help="also score 'imagenet' features of the same backbone on the same crops, 'none', or the metrics.json of an earlier evaluation")
    p.add_argument("--compare", type=Path, nargs="*", default=[], metavar="METRICS_JSON", help="also draw the recall@k curves of these earlier evaluations (their metrics.json) on the plot")
    p.add_argument("--backbone", default=None, help=f"backbone of the ImageNet features: {', '.join(BACKBONES)} or a keras.applications class name (default: the evaluated model's, else mobilenet_v2)")
    p.add_argument("--weights", default="imagenet", help="ImageNet weights of that backbone: 'imagenet' (Keras download or $SHOWROOM_WEIGHTS_DIR) or a .weights.h5 path")
    p.add_argument("--alpha", type=float, default=None, help="MobileNetV2 width of the ImageNet features (default: the evaluated run's, else 0.35)")
    p.add_argument("--image-size", type=int, default=None, help=f"input side for --model imagenet (default {ModelConfig().image_size}; a trained model uses its own)")
    p.add_argument("--min-confidence", type=float, default=None, help=f"detector confidence a proposed crop needs (default: the model's; {DEFAULT_MIN_CONFIDENCE} for imagenet)")
    p.add_argument("--fill-confidence", type=float, default=None, help="a mapped class with no crop at --min-confidence may use its best box down to this score, 0 = off (default: the model's)")
    p.add_argument("--catalog-decode", choices=CATALOG_DECODES, default=None,
                   help="read catalog photos 'reduced' (JPEG scaled while decoding) or 'full' (default: the model's)")
    p.add_argument("--crop-padding", type=float, default=None, help=f"padding around a crop, fraction of its longer side (default: the model's, as in training; {DEFAULT_CROP_PADDING} for imagenet)")
    p.add_argument("--new-products", type=Path, default=None, metavar="FILE",
                   help="the new-products protocol: a product list (python -m evaluation.holdout --new-products) of products the model was trained "
                        "without (training.fit --holdout-products) and that are only in the index; their pairs are scored apart from the known "
                        "products', each paired against the baseline")
    p.add_argument("--fit-calibration", type=Path, default=None, metavar="FILE",
                   help="fit the match calibrator (engine.calibration: P(same product) of a result, and the 'no close match' threshold) "
                        "on these scenes' pairs and write it here; do it on development scenes, never on the hold-out")
    p.add_argument("--calibration-features", choices=("distance", "distance+gap"), default="distance",
                   help="with --fit-calibration: what the top result's probability reads (chosen on development scenes: the gap added nothing)")
    p.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                   help="measure a fitted calibrator on these scenes: AUROC between queries whose product is in the index and queries "
                        "whose product is removed, shares told 'no close match' at its threshold, ECE and a reliability diagram")
    p.add_argument("--seen-products", type=Path, default=None, help="split recall by products seen / not seen in training pairs: a product list (one id per line) or a triplet manifest (its real positives); default: the evaluated run's seen_products.txt")
    p.add_argument("--ks", default=",".join(map(str, d.ks)), help="comma-separated k of recall@k")
    p.add_argument("--grid-queries", type=int, default=12, help="random queries shown in each results grid")
    p.add_argument("--tsne-products", type=int, default=600, help="products drawn on the t-SNE map (0 = no map)")
    p.add_argument("--seed", type=int, default=0, help="seed of the grids' and map's random choice")
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.json, pairs.csv and the plots (default: .showroom/evaluations/<time>)")
    p.add_argument("--run-name", default=None, help="MLflow run name")
    p.add_argument("--experiment", default="showroom", help="MLflow experiment")
    p.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda home: _run(args, home), verbose=args.verbose, logger_name=logger.name)


@dataclass
class Target:
    """What is evaluated: its embedder, name, training run (None for ImageNet features or a bare
    file) and the params its MLflow evaluation run carries (named as on the fit run)."""

    name: str
    embedder: Embedder
    run_id: str | None
    params: dict
    backbone: str
    alpha: float
    trained_size: int | None = None  # a multi-scale embedder: the size its network was trained at


def _run(args: argparse.Namespace, home: Path) -> int:
    from engine.model.embedder import Embedder  # loads TensorFlow: imported here, once run_cli has set the environment

    t_start = time.perf_counter()
    if args.proposals and args.detections:
        raise ValueError("--proposals and --detections each replace the detector's boxes: give one of them")
    compare = [_earlier_evaluation(path, "--compare") for path in args.compare]
    # (name, summary, curves) of the baseline: read now from a file, or scored below on the same crops
    baseline = None if args.baseline in ("none", "imagenet") else _earlier_evaluation(args.baseline, "--baseline")
    catalog = load_catalog(args.catalog)
    eval_catalog, scenes_param = _scenes(catalog, args.scenes)
    target = _target(args)
    cfg = EvalConfig(ks=_parse_ks(args.ks), seen_products=_seen_products(args.seen_products, target.run_id, home),
                     new_products=_new_products(args.new_products, catalog), hub_beta=args.hub_beta, hub_k=args.hub_k,
                     p2s_crops=args.p2s_crops, p2s_windows=args.p2s_windows)
    views = _catalog_views(args, catalog, eval_catalog)
    reference = _reference_scenes(args, catalog, eval_catalog)
    recorders: list[DetectionRecorder] = []
    inputs, cfg = _prepare(args, eval_catalog, target.embedder.preprocessing, home, cfg, args.detector_weights, target,
                           drawn=args.proposals, reference=reference, replay=args.detections, recorders=recorders)
    inputs, cfg = _with_views(inputs, cfg, views)
    result = score(inputs, target.embedder, cfg)
    if views is not None:
        plain = score(inputs, target.embedder, replace(cfg, views_weight=0.0))
        result.summary["catalog_views"] = views.record()
        result.summary["without_views"] = {"summary": plain.summary,
                                           "difference": paired_difference(result, plain, cfg.ks, cfg.room, inputs.types, cfg.new_products)}
    if cfg.hub_beta > 0:
        plain = score(inputs, target.embedder, replace(cfg, hub_beta=0.0))
        result.summary["without_hub_correction"] = {"summary": plain.summary,
                                                    "difference": paired_difference(result, plain, cfg.ks, cfg.room, inputs.types, cfg.new_products)}
    b_embedder = scored = None
    if args.baseline == "imagenet" and args.model != "imagenet":
        b_embedder = _imagenet_baseline(args, target, inputs)
        scored = score(inputs, b_embedder, cfg)
        baseline = (b_embedder.name, scored.summary, scored.curves)
        result.summary["vs_baseline"] = paired_difference(result, scored, cfg.ks, cfg.room, inputs.types, cfg.new_products)
    if args.fit_calibration or args.calibration:
        result.summary["calibration"] = _calibration(args, target, result, scenes_param)
    if args.versus_detector:
        result.summary["versus_detector"] = _versus_detector(args, eval_catalog, target, result, b_embedder, scored, home, reference)
    wall = time.perf_counter() - t_start
    out = args.out or home / "evaluations" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    report = {"name": target.name, "model": args.model, "model_run": target.run_id, "catalog": str(catalog.root),
              "catalog_fingerprint": catalog.fingerprint, **scenes_param, "params": target.params,
              "summary": result.summary, "curves": result.curves, "wall_seconds": wall,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if baseline is not None:
        report["baseline"] = dict(zip(("name", "summary", "curves"), baseline))
    if recorders:
        report["detections"] = {"file": "detections.json", "replayed_from": str(args.detections) if args.detections else None,
                                "photos": len(recorders[0].images)}
    files = _write_outputs(args, out, report, inputs, result, [baseline] if baseline else [], compare)
    if recorders:
        write_json_atomic(out / "detections.json", recorders[0].record())
        files.append("detections.json")
    lines = _summary_lines(catalog, report, cfg.ks, baseline, wall)
    if not args.no_mlflow:
        lines.append(_log_run(args, target, catalog, scenes_param, inputs, result, baseline, out, files, wall))
    lines.append(f"report: {out}")
    print("\n".join(lines))
    return 0


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    except ValueError:
        raise ValueError(f"--ks must be comma-separated integers, got {text!r}") from None


def _scenes(catalog: Catalog, scene_list: Path | None) -> tuple[Catalog, dict]:
    """The catalog restricted to the listed scenes (all without a list), and params naming the list."""
    if not scene_list:
        return catalog, {"scenes": "all", "scenes_count": len(catalog.scenes), "scenes_sha": ""}
    names = read_scene_list(scene_list)
    restricted = restrict_scenes(catalog, keep=names)
    logger.info("evaluating %d scenes of %s (%d pairs)", len(names), scene_list, len(restricted.pairs))
    return restricted, {"scenes": str(scene_list), "scenes_count": len(names),
                        "scenes_sha": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]}


def _target(args: argparse.Namespace) -> Target:
    """The evaluated model, with its preprocessing overridden by --image-size/--crop-padding/--min-confidence
    where given, and what is known of how it was trained."""
    # these load TensorFlow: imported here, once run_cli has set the environment
    from engine.model.embedder import Embedder
    from engine.model.ensemble import ensemble_members, scales_record
    from training.model_ref import resolve_model

    overrides = {k: v for k, v in (("crop_padding", args.crop_padding), ("min_confidence", args.min_confidence),
                                   ("fill_confidence", args.fill_confidence), ("catalog_decode", args.catalog_decode)) if v is not None}
    if args.model == "imagenet":
        backbone = args.backbone or "mobilenet_v2"
        alpha = args.alpha if args.alpha is not None else ModelConfig().alpha
        mcfg = ModelConfig(backbone=backbone, weights=args.weights, image_size=args.image_size or ModelConfig().image_size, alpha=alpha)
        embedder = Embedder.imagenet(mcfg, Preprocessing(image_size=mcfg.image_size, **overrides))
        params = {"model": "imagenet", "model.backbone": backbone, "model.weights": args.weights, "model.image_size": mcfg.image_size,
                  "model.embedding_dim": embedder.dim, "model.low_level_branch": False, "train.epochs": 0}
        return Target(embedder.name, embedder, None, params, backbone, alpha)
    ref = resolve_model(args.model)
    embedder = Embedder.load(ref.path)
    embedder = replace(embedder, preprocessing=replace(embedder.preprocessing, **overrides))
    if args.image_size and args.image_size != embedder.size:
        logger.warning("--image-size %d ignored: the model takes %d px", args.image_size, embedder.size)
    run_params = _fit_params(ref.run_id)
    backbone = args.backbone or run_params.get("model.backbone") or "mobilenet_v2"
    members = ensemble_members(ref.path)  # an ensemble's ImageNet baseline is its first member's backbone
    model_name = members[0].model if members else embedder.model.name
    if args.backbone is None and model_name.startswith("showroom_"):
        backbone = model_name.removeprefix("showroom_")
    alpha = args.alpha if args.alpha is not None else float(run_params.get("model.alpha", ModelConfig().alpha))
    name = Path(args.model).stem
    if ref.run_id:
        try:
            name = run_tags(ref.run_id).get("mlflow.runName") or f"model-{ref.run_id[:8]}"
        except ValueError:
            name = f"model-{ref.run_id[:8]}"
    params = {"model": args.model, "model.image_size": embedder.size, "model.embedding_dim": embedder.dim,
              "model.backbone": backbone, **{k: run_params[k] for k in KEY_PARAMS if k in run_params}}
    scales = scales_record(ref.path)
    if scales:
        params["model.scales"] = ",".join(str(s) for s in scales["sizes"])
    return Target(name, embedder, ref.run_id or None, params, backbone, alpha, scales["trained_size"] if scales else None)


def _imagenet_baseline(args: argparse.Namespace, target: Target, inputs: EvalInputs):
    """ImageNet features of the same crops: at the evaluated model's input size or, for a multi-scale
    embedder, at the size its network was trained at, reading the crops cut at the larger size
    (ImageNet features only lose at larger sizes or several: docs/evaluation.md)."""
    from engine.model.embedder import Embedder
    from engine.model.ensemble import build_multiscale

    size = target.trained_size or inputs.image_size
    base = Embedder.imagenet(ModelConfig(backbone=target.backbone, weights=args.weights, image_size=size, alpha=target.alpha),
                             replace(inputs.preprocessing, image_size=size))
    if size == inputs.image_size:
        return base
    return Embedder(build_multiscale(base.model, [size], input_side=inputs.image_size, name=base.model.name), inputs.preprocessing,
                    normalize=True, name=base.name)


def _seen_products(path: Path | None, run_id: str | None, home: Path) -> frozenset[str] | None:
    """The products of the training pairs: from ``path`` (a list or a manifest), else from the
    training run's ``seen_products.txt``; None when neither is known."""
    if path is None and run_id:
        try:
            path = download_artifact(run_id, "seen_products.txt", home / "downloads" / run_id)
        except Exception:  # MLflow raises several kinds for a missing artifact
            logger.info("run %s has no seen_products.txt: no seen / unseen split", run_id)
            return None
    if path is None:
        return None
    return frozenset(read_seen_products(path))


def _calibration(args: argparse.Namespace, target: Target, result: EvalResult, scenes_param: dict) -> dict:
    """Fit the match calibrator on these pairs (``--fit-calibration``) and/or measure one (``--calibration``)."""
    from engine.calibration import MatchCalibrator
    from evaluation import calibration

    out: dict = {}
    fingerprint = target.embedder.fingerprint or target.name  # an unsaved baseline (ImageNet features) is known by its name
    if args.fit_calibration:
        cal = calibration.fit(result.match_rows, fingerprint, features=args.calibration_features, fitted={"model": args.model, "catalog": str(args.catalog),
                                                                      "scenes": scenes_param.get("scenes") or "all",
                                                                      "detector": args.detector_weights or ""})
        cal.save(args.fit_calibration)
        out["fitted"] = {"file": str(args.fit_calibration), "weights": list(cal.weights), "threshold": cal.threshold, **cal.fitted}
    if args.calibration:
        cal = MatchCalibrator.load(args.calibration, model_fingerprint=fingerprint)
        out["assessed"] = {"file": str(args.calibration), **calibration.assess(cal, result.match_rows, result.match_scenes)}
    return out


def _new_products(path: Path | None, catalog: Catalog) -> frozenset[str] | None:
    """The new-products list, checked against the catalog; None without ``--new-products``."""
    if path is None:
        return None
    ids = frozenset(read_product_list(path))
    unknown = sorted(ids - set(catalog.types))
    if unknown:
        raise CatalogError(f"--new-products {path} names {len(unknown)} products that {catalog.root} does not have, e.g. {unknown[:5]}")
    return ids


def _fit_params(run_id: str) -> dict[str, str]:
    """The params of the training run (empty when unknown)."""
    if not run_id:
        return {}
    try:
        return run_params(run_id)
    except Exception as exc:  # MLflow raises several kinds for an unknown run
        logger.warning("no MLflow params for run %s (%s)", run_id, exc)
        return {}


def _catalog_views(args: argparse.Namespace, catalog: Catalog, evaluated: Catalog) -> ProductViews | None:
    """``--catalog-views`` read and checked against the catalog, without the views pasted into an
    evaluated scene (they would carry that room into the index); None when not given."""
    if args.catalog_views is None:
        return None
    from training.synthesis import synthetic_views  # reads the manifest format; no TensorFlow

    views = synthetic_views(args.catalog_views, catalog, args.views_weight)
    kept = views.outside({s.scene for s in evaluated.scenes})
    if kept is None:
        raise CatalogError(f"--catalog-views {args.catalog_views}: every view is pasted into an evaluated scene; synthesize them with "
                           "--holdout-scenes naming the scenes you evaluate")
    if len(kept.views) < len(views.views):
        logger.warning("%d of %d views are pasted into evaluated scenes: left out", len(views.views) - len(kept.views), len(views.views))
    return kept


def _with_views(inputs: EvalInputs, cfg: EvalConfig, views: ProductViews | None) -> tuple[EvalInputs, EvalConfig]:
    """The inputs with the views' crops of the evaluated catalog's products (cut as the model cuts a
    room crop) and the config that blends them; unchanged when ``views`` is None."""
    if views is None:
        return inputs, cfg
    views = views.for_products(inputs.product_ids)
    prep = inputs.preprocessing
    inputs.view_images = np.stack(list(view_crops(views.views, prep.image_size, prep.crop_padding)))
    inputs.view_products = [v.product_id for v in views.views]
    logger.info("%d in-room views of %d products blended into their photos' vectors (weight %g)", len(views.views),
                len(set(inputs.view_products)), views.weight)
    return inputs, replace(cfg, views_weight=views.weight)


def _reference_scenes(args: argparse.Namespace, catalog: Catalog, evaluated: Catalog) -> Catalog | None:
    """The room photos the hub correction measures products on: every scene of ``catalog`` neither
    evaluated nor in ``--hub-exclude``; None when the correction is off."""
    if args.hub_beta <= 0:
        return None
    never = {s.scene for s in evaluated.scenes} | (set(read_scene_list(args.hub_exclude)) if args.hub_exclude else set())
    reference = restrict_scenes(catalog, keep=[s.scene for s in catalog.scenes if s.scene not in never])
    if not reference.scenes:
        raise CatalogError(f"--hub-beta: {catalog.root} has no room photo left for reference once the evaluated scenes"
                           f"{' and --hub-exclude' if args.hub_exclude else ''} are set aside")
    logger.info("hub correction (beta %g, k %d): reference room photos = %d scenes neither evaluated nor excluded",
                args.hub_beta, args.hub_k, len(reference.scenes))
    return reference


def _prepare(args: argparse.Namespace, catalog: Catalog, prep: Preprocessing, home: Path, cfg: EvalConfig,
             weights: str | None, target: Target, *, drawn: Sequence[Path] | None = None,
             reference: Catalog | None = None, replay: Path | None = None,
             recorders: list[DetectionRecorder] | None = None) -> tuple[EvalInputs, EvalConfig]:
    """Decode, detect (cached) and crop once for every model scored in this call, keeping the boxes
    ``--boxes`` says, and fix each pair's query crop (``--crop-choice``); the config with the
    whole-room spec of that detector (when it runs). ``drawn``: boxes files whose boxes propose
    the crops instead of the detector (``DrawnBoxes``). ``reference``: scenes whose crops, proposed
    by the same detector (never drawn boxes: a shop's own photos have none), measure each product's
    room density for the hub correction. ``replay``: a detections record (``RecordedDetections``)
    proposing instead of the detector; ``recorders``: gets the ``DetectionRecorder`` of whatever
    detector proposed (not drawn boxes), to write with the report."""
    detector, detect, page_labels = None, None, None
    cmap = load_category_map(args.category_map or DEFAULT_MAP)
    for flag, given in (("--proposals", " ".join(map(str, drawn or ())) or None), ("--detections", replay)):
        if given is not None and all(p.box is not None for p in catalog.pairs):
            raise CatalogError(f"{flag} {given}: every pair of {catalog.root} has its box in pairs.csv, so no detector proposes crops to replace")
    if drawn is not None:
        detector = DrawnBoxes.for_catalog(drawn, catalog, load_category_map(args.groups_map or GROUPS_MAP).groups)
        detect = detector.detect_at
    elif replay is not None and any(p.box is None for p in catalog.pairs):
        detector = RecordedDetections.read(replay, prep.detector_confidence)
        detect = detector.detect_at
        logger.info("detections replayed from %s (recorded by %s)", replay, detector.recorded)
    elif any(p.box is None for p in catalog.pairs):
        detector, detect = _detector(weights, prep, home)
    if detector is not None and not isinstance(detector, DrawnBoxes) and recorders is not None:
        replayed = isinstance(detector, RecordedDetections)
        recorder = DetectionRecorder(detect, detector.recorded if replayed else detector.fingerprint, detector.class_names,
                                     detector.confidence if replayed else prep.detector_confidence)
        recorders.append(recorder)
        detect = recorder.detect
    if detector is not None:
        cmap = map_for_detector(detector.class_names, args.category_map)
        cfg = replace(cfg, room=replace(room_spec(catalog, detector.class_names, load_category_map(args.groups_map or GROUPS_MAP), cfg.ks),
                                        order=args.room_order))
        if args.boxes == "page":
            page_labels = frozenset(cfg.room.label_group)
    inputs = prepare(catalog, prep, detector=detector, category_map=cmap, detect=detect, page_labels=page_labels)
    if reference is not None:
        inputs.reference_images = _reference_crops(args, reference, prep, home, weights) if isinstance(detector, DrawnBoxes) else \
            _crops_of(reference, prep, detect, cmap, page_labels)
    inputs = choose_query_crops(inputs, args.crop_choice, _chooser(args, target) if args.crop_choice == "imagenet" else None,
                                cfg.room, CHOICE_MODEL.image_size)
    logger.info("%d scenes, %d crops, %d pairs (%d reachable through %s) prepared in %.1fs", len(inputs.scenes), len(inputs.crops),
                len(inputs.cases), sum(c.reachable for c in inputs.cases), Path(cmap.source).name, inputs.seconds)
    return inputs, cfg


def _detector(weights: str | None, prep: Preprocessing, home: Path) -> tuple[YoloDetector, Callable]:
    """The YOLO detector of ``weights`` (default: the service's) and its cached detect callable."""
    detector = YoloDetector(weights or default_weights(), conf=prep.detector_confidence)
    return detector, DetectionCache(detector, home / "cache" / "detections").detect


def _crops_of(catalog: Catalog, prep: Preprocessing, detect: Callable | None, cmap: CategoryMap, page_labels) -> np.ndarray:
    """uint8 (R, S, S, 3): the crops ``detect`` proposes on ``catalog``'s scenes, as ``prepare`` cuts
    them (without decoding its products or windows)."""
    crops = [query_crop(p.image, c.box, prep.image_size, prep.crop_padding)
             for p in catalog_proposals(catalog, detect, prep, cmap.classes, page_labels) if p.image is not None for c in p.crops]
    return np.stack(crops) if crops else np.zeros((0, prep.image_size, prep.image_size, 3), np.uint8)


def _reference_crops(args: argparse.Namespace, reference: Catalog, prep: Preprocessing, home: Path, weights: str | None) -> np.ndarray:
    """With drawn boxes, the reference photos are still proposed by the detector the service runs: a
    shop's own photos have no drawn boxes."""
    detector, detect = _detector(weights, prep, home)
    groups = load_category_map(args.groups_map or GROUPS_MAP)
    page_labels = frozenset(label_groups(detector.class_names, groups)) if args.boxes == "page" else None
    return _crops_of(reference, prep, detect, map_for_detector(detector.class_names, args.category_map), page_labels)


def _chooser(args: argparse.Namespace, target: Target):
    """The ImageNet features that fix each pair's query crop (``CHOICE_MODEL``; never the evaluated model)."""
    from engine.model.embedder import Embedder

    weights = args.crop_choice_weights
    if weights is None:
        same = target.backbone == CHOICE_MODEL.backbone and target.alpha == CHOICE_MODEL.alpha
        weights = args.weights if same else "imagenet"
    return Embedder.imagenet(replace(CHOICE_MODEL, weights=weights))


def room_spec(catalog: Catalog, detector_classes, groups_map: CategoryMap, ks: Sequence[int]) -> RoomSpec:
    """The whole-room spec of a detector on a catalog: each type's group, each detector class's group,
    and the types the COCO category map reaches (the main protocol's pairs with the COCO detector)."""
    types = set(catalog.types.values())
    coco = load_category_map(DEFAULT_MAP)
    return RoomSpec(type_group={t: g for t in types if (g := groups_map.class_for(t))},
                    label_group=label_groups(detector_classes, groups_map),
                    coco_types=frozenset(t for t in types if coco.class_for(t)), ks=tuple(ks))


def _versus_detector(args: argparse.Namespace, catalog: Catalog, target: Target, result: EvalResult, b_embedder: Embedder | None,
                     b_scored: EvalResult | None, home: Path, reference: Catalog | None = None) -> dict:
    """The same model(s) scored on the crops of ``--versus-detector``: its whole-room summary, and this
    call's detector minus it, pair by pair (for the model and for the baseline); ``reference``: the
    hub correction's room photos, as for this call's detector."""
    cfg = EvalConfig(ks=_parse_ks(args.ks), seen_products=_seen_products(args.seen_products, target.run_id, home),
                     new_products=_new_products(args.new_products, catalog), hub_beta=args.hub_beta, hub_k=args.hub_k,
                     p2s_crops=args.p2s_crops, p2s_windows=args.p2s_windows)
    inputs, cfg = _prepare(args, catalog, target.embedder.preprocessing, home, cfg, args.versus_detector, target, reference=reference)
    inputs, cfg = _with_views(inputs, cfg, _catalog_views(args, load_catalog(args.catalog), catalog))
    other = score(inputs, target.embedder, cfg)
    out = {"detector": inputs.detector, "weights": args.versus_detector, "room": other.summary.get("room"),
           "difference": paired_room_difference(result.room_pairs, other.room_pairs, cfg.room, cfg.room.coco_types, inputs.types)}
    if b_embedder is not None and b_scored is not None:
        b_other = score(inputs, b_embedder, cfg)
        out["baseline_room"] = b_other.summary.get("room")
        out["baseline_difference"] = paired_room_difference(b_scored.room_pairs, b_other.room_pairs, cfg.room, cfg.room.coco_types, inputs.types)
    return out


def _write_outputs(args: argparse.Namespace, out: Path, report: dict, inputs: EvalInputs, result: EvalResult,
                   others: list[tuple[str, dict, dict]], compare: list[tuple[str, dict, dict]]) -> list[str]:
    """metrics.json, pairs.csv and the plots into ``out``; the names of the files written."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", report)
    _write_pairs(out / "pairs.csv", result, inputs.crops)
    curves = {report["name"]: result.curves}
    for other_name, _, other_curves in others + compare:
        curves.setdefault(other_name, other_curves)
    title = f"{Path(report['catalog']).name}: {report['scenes_count']} scenes"
    images = {"recall_at_k.png": plots.recall_curves(curves, title)}
    rng = np.random.default_rng(args.seed)
    images["queries_scene_to_product.png"] = plots.result_grid(_s2p_rows(inputs, result, rng, args.grid_queries))
    images["queries_product_to_scene.png"] = plots.result_grid(_p2s_rows(inputs, result, rng, args.grid_queries))
    if args.tsne_products:
        pick = np.sort(rng.permutation(len(inputs.product_ids))[: args.tsne_products])
        thumbs = inputs.product_images[[inputs.first_image[inputs.product_ids[i]] for i in pick]]
        images["tsne_products.png"] = plots.tsne_map(result.product_emb[pick], thumbs, seed=args.seed)
    assessed = (report["summary"].get("calibration") or {}).get("assessed")
    if assessed and assessed.get("pairs"):
        images["reliability.png"] = plots.reliability_diagram(
            assessed["reliability"], f"{report['name']}: ECE {assessed['ece']:.3f}, AUROC {assessed['auroc']:.3f} ({assessed['pairs']} pairs)")
    for fname, im in images.items():
        cv2.imwrite(str(out / fname), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    return ["metrics.json", "pairs.csv", *images]


def _summary_lines(catalog: Catalog, report: dict, ks: Sequence[int], baseline, wall: float) -> list[str]:
    """The table and headline lines printed at the end."""
    summary = report["summary"]
    rows = [(report["name"], summary)] + ([baseline[:2]] if baseline else [])
    proto = summary["protocol"]
    ci = summary["scene_to_product"]["recall_ci95"]
    k10 = 10 if 10 in ks else ks[-1]
    return [
        table(rows, [k for k in ks if k <= 20] or list(ks)),
        *_room_lines(report["name"], summary, baseline),
        f"query box per pair: {proto.get('crop_choice', 'best')} ({proto.get('chosen_among_several', 0)} pairs chose among several); "
        f"s2p recall@{k10} at the best box instead: {_best_box(summary, k10)}",
        f"s2p recall@{k10} 95% interval (scene bootstrap): {_interval(ci[k10])}"
        + (f"; minus {baseline[0]}: {_signed(summary['vs_baseline']['scene_to_product'][k10])}" if "vs_baseline" in summary else ""),
        *_new_product_lines(summary, k10),
        *_without_lines(summary, k10),
        *_calibration_lines(summary.get("calibration") or {}),
        f"{catalog.root.name}: {proto['scenes']} scenes, {proto['crops']} crops, {proto['catalog_products']} products; "
        f"pairs {proto['pairs']}: reachable {proto['reachable_pairs']}, unreachable {proto['unreachable_pairs']} "
        f"(boxes: {proto['boxes']}); wall {wall:.1f}s",
    ]


def _new_product_lines(summary: dict, k: int) -> list[str]:
    """The new-products protocol's lines: new vs known products, s2p and p2s recall@k, each minus the baseline."""
    blocks = summary.get("new_products")
    if not blocks:
        return []
    vs = summary.get("vs_baseline") or {}
    room, room_vs = summary.get("room") or {}, (summary.get("vs_baseline") or {}).get("room") or {}
    lines = []
    for side in ("new", "known"):
        b = blocks[side]
        line = (f"{side} products ({b['products']} products, {b['reachable_pairs']} of {b['pairs']} pairs reachable): "
                f"s2p recall@{k} {_recall(b['s2p_recall'], k)} {_interval(b['s2p_recall_ci95'][k])}")
        if f"scene_to_product_{side}" in vs:
            line += f", minus baseline {_signed(vs[f'scene_to_product_{side}'][k])}"
        line += f"; p2s recall@{k} {_recall(b['p2s_recall'], k)}"
        if f"product_to_scene_{side}" in vs:
            line += f", minus baseline {_signed(vs[f'product_to_scene_{side}'][k])}"
        if side in room:
            line += f"; all-pairs s2p recall@{k} {_recall(room[side]['s2p_recall'], k)}"
            if f"{side}_products" in room_vs:
                line += f", minus baseline {_signed(room_vs[f'{side}_products']['s2p_recall'][k])}"
        lines.append(line)
    new, known = (blocks[s]["s2p_recall"].get(k) for s in ("new", "known"))
    if new is not None and known:
        lines.append(f"new / known s2p recall@{k}: {new / known:.2f}")
    return lines


def _without_lines(summary: dict, k: int) -> list[str]:
    """With the hub correction or the catalog's views: the same model without each, and the difference pair by pair."""
    return [line for key, what in (("without_views", "the catalog's views"), ("without_hub_correction", "the hub correction"))
            for line in _without_line(summary.get(key), what, k)]


def _without_line(block: dict | None, what: str, k: int) -> list[str]:
    if not block:
        return []
    d = block["difference"]
    line = (f"without {what}: s2p recall@{k} {_recall(block['summary']['scene_to_product']['recall'], k)}; "
            f"with minus without: s2p@{k} {_signed(d['scene_to_product'][k])}")
    room = d.get("room", {}).get("all_pairs")
    if room:
        line += "; all pairs: " + ", ".join(f"{name}@{kk} {_signed(room[key][kk])}" for name, key, kk in
                                            (("s2p", "s2p_recall", k), ("in group", "s2p_group_recall", k), ("room", "room_recall", 20),
                                             ("room", "room_recall", 50)) if kk in room.get(key, {}))
    return [line]


def _calibration_lines(cal: dict) -> list[str]:
    lines = []
    if "fitted" in cal:
        f = cal["fitted"]
        lines.append(f"match calibrator fitted on {f['pairs']} pairs: weights {[round(w, 3) for w in f['weights']]}, "
                     f"threshold {f['threshold']:.3f} ({f['rule']}) -> {f['file']}")
    a = cal.get("assessed")
    if a and a.get("pairs"):
        lines.append(f"'no close match' on {a['pairs']} pairs, each asked with its product in the index and removed: AUROC {a['auroc']:.3f}; "
                     f"at {a['threshold']:.3f}: absent told {a['absent_told_no_close_match']:.1%} {_interval(a['absent_told_no_close_match_ci95'])}, "
                     f"present told {a['present_told_no_close_match']:.1%}, present in the top 10 losing it "
                     f"{a['present_in_top10_lost']:.1%} {_interval(a['present_in_top10_lost_ci95'])} of {a['present_in_top10']}; "
                     f"ECE {a['ece']:.3f}; AUROC ceiling at this R@1 ({a['recall_at_1']:.3f}): {a['auroc_ceiling']:.3f}")
    return lines


def _recall(curve: dict, k: int) -> str:
    v = curve.get(k, curve.get(str(k)))
    return "n/a" if v is None else f"{v:.3f}"


def _log_run(args: argparse.Namespace, target: Target, catalog: Catalog, scenes_param: dict, inputs: EvalInputs,
             result: EvalResult, baseline, out: Path, files: list[str], wall: float) -> str:
    """One MLflow evaluation run: tags, params named as on the fit run, headline metrics, artifacts."""
    prep = inputs.preprocessing
    with mlflow_run(run_name=args.run_name or f"eval-{target.name}", experiment=args.experiment) as tracker:
        tags = {"showroom.kind": "evaluate", "showroom.catalog": catalog.root.name, "showroom.model": args.model}
        if target.run_id:
            tags["showroom.model_run"] = target.run_id
        tracker.set_tags(tags)
        tracker.log_params({**target.params, "catalog": str(catalog.root), "catalog_fingerprint": catalog.fingerprint, **scenes_param,
                            "detector": inputs.detector, "min_confidence": prep.min_confidence, "crop_padding": prep.crop_padding,
                            "boxes": args.boxes, "crop_choice": inputs.crop_choice,
                            "git_commit": git_commit(), "baseline": baseline[0] if baseline else "none"})
        metrics = flat_metrics(result.summary)
        for t, v in result.summary["scene_to_product"]["per_type"].items():
            if v["recall"].get(10) is not None:
                metrics[f"s2p_recall_at_10/{metric_key(t)}"] = v["recall"][10]
        if baseline is not None:
            metrics.update(flat_metrics(baseline[1], "baseline/"))
        metrics["eval_seconds"] = wall
        tracker.log_metrics(metrics, step=0)
        for fname in files:
            tracker.log_artifact(out / fname)
        if args.scenes:
            tracker.log_artifact(args.scenes, "scenes")
        return f"MLflow run {tracker.run_id}: artifacts {', '.join(files)}"


def _room_lines(name: str, summary: dict, baseline) -> list[str]:
    """The whole-room scores (all pairs, then the COCO-class pairs) of the model, its baseline and a
    second detector, with the paired differences."""
    room = summary.get("room")
    if not room:
        return []

    def row(label: str, block: dict) -> str:
        s, r, g = block["s2p_recall"], block["room_recall"], block.get("s2p_group_recall") or {}
        return (f"  {label:<36} pairs {block['pairs']:>4}  cover {block['coverage']:.3f}  s2p@1 {s.get(1, s.get('1')) or 0:.3f}  "
                f"s2p@10 {s.get(10, s.get('10')) or 0:.3f}  in group @10 {g.get(10, g.get('10')) or 0:.3f}  room@10/20/50 "
                + " ".join(f"{v:.3f}" for v in r.values()))

    lines = [f"whole room ({room['grouped_pairs']} of {room['pairs']} pairs in a product group; "
             f"{room['objects_per_scene']:.1f} objects a scene):", row(name, room), row(f"{name}, COCO-class pairs", room["coco_class_pairs"])]
    if baseline is not None and baseline[1].get("room"):
        lines += [row(baseline[0], baseline[1]["room"]), row(f"{baseline[0]}, COCO-class pairs", baseline[1]["room"]["coco_class_pairs"])]
    diff = (summary.get("vs_baseline") or {}).get("room")
    if diff:
        lines.append("  minus the baseline, all pairs: " + _room_diff(diff["all_pairs"]))
    versus = summary.get("versus_detector")
    if versus:
        lines += [row(f"{name}, versus detector", versus["room"]), row(f"{name}, versus detector, COCO-class", versus["room"]["coco_class_pairs"]),
                  "  this detector minus the versus detector, all pairs: " + _room_diff(versus["difference"]["all_pairs"]),
                  "  … COCO-class pairs: " + _room_diff(versus["difference"]["coco_class_pairs"])]
        if "baseline_difference" in versus:
            lines.append("  … for the baseline, all pairs: " + _room_diff(versus["baseline_difference"]["all_pairs"]))
    return lines


def _room_diff(diff: dict) -> str:
    parts = []
    for metric, ks in (("coverage", (1,)), ("s2p_recall", (1, 10)), ("s2p_group_recall", (10,)), ("room_recall", (10, 20, 50))):
        for k in ks:
            entry = diff.get(metric, {}).get(k, diff.get(metric, {}).get(str(k)))
            if entry:
                name = {"s2p_group_recall": "s2p in group"}.get(metric, metric.replace("_recall", ""))
                parts.append(f"{name}{'' if metric == 'coverage' else '@' + str(k)} {_signed(entry)}")
    return "; ".join(parts)


def _best_box(summary: dict, k: int) -> str:
    best = summary["scene_to_product"].get("recall_best_box") or {}
    v = best.get(k, best.get(str(k)))
    return "-" if v is None else f"{v:.3f}"


def _interval(ci) -> str:
    lo, hi = ci
    return "-" if lo is None or lo != lo else f"[{lo:.3f}, {hi:.3f}]"


def _signed(entry) -> str:
    d = entry["difference"]
    lo, hi = entry["ci95"]
    return "-" if d is None else f"{d:+.3f} (95% interval [{lo:+.3f}, {hi:+.3f}])"


def _earlier_evaluation(path: Path | str, flag: str) -> tuple[str, dict, dict]:
    """(name, summary, curves) of an earlier evaluation's metrics.json."""
    try:
        earlier = json.loads(Path(path).read_text())
        return earlier.get("name", Path(path).parent.name), earlier["summary"], earlier["curves"]
    except (OSError, json.JSONDecodeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{flag} {path}: not the metrics.json of an evaluation ({exc})") from None


def _write_pairs(path: Path, result, crops) -> None:
    """One row per pair: its ranks (empty = never found), the query box chosen for it and its best rank over the candidate boxes;
    the query crop's distance to its own product and to the best and second-best other ones (what the match calibration reads)."""
    def fmt(v):
        return "" if v == float("inf") else int(v)

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        room = result.room_pairs or [None] * len(result.pairs)
        w.writerow(["product_id", "type", "scene", "reachable", "box_source", "query_box", "rank", "rank_best_box", "rank_any_crop",
                    "scene_rank", "group", "group_covered", "group_rank", "group_rank_best_box", "in_group_rank", "room_rank",
                    "own_distance", "best_other_distance", "second_other_distance"])
        match = {int(row[4]): row[:3] for row in result.match_rows}
        for i, (r, rp) in enumerate(zip(result.pairs, room)):
            c = r.case
            box = crops[r.matched_crop].box if r.matched_crop is not None and crops[r.matched_crop].box else None
            extra = (["", "", "", "", "", ""] if rp is None else
                     [rp.group, int(rp.covered), fmt(rp.rank), fmt(min(rp.rank, rp.best_rank)), fmt(rp.in_group_rank), fmt(rp.room_rank)])
            w.writerow([c.product_id, c.type, c.scene, int(c.reachable), c.box_source, " ".join(map(str, box)) if box else "",
                        fmt(r.rank), fmt(min(r.rank, r.rank_best)), fmt(r.rank_any), fmt(r.scene_rank), *extra,
                        *([f"{v:.5f}" for v in match[i]] if i in match else ["", "", ""])])


def _s2p_rows(inputs, result, rng, n):
    """Random reachable pairs that have a query crop: the crop, its top-5 products, the truth marked."""
    first = inputs.first_image
    cand = [r for r in result.pairs if r.case.reachable and r.matched_crop is not None]
    rows = []
    for i in sorted(rng.permutation(len(cand))[:n]):
        r = cand[i]
        top = [inputs.product_ids[j] for j in result.top[r.matched_crop]]
        ims = [inputs.product_images[first[p]] for p in top]
        truth = [p == r.case.product_id for p in top]
        if not any(truth):
            ims.append(inputs.product_images[first[r.case.product_id]])
            truth.append(True)
        rank = "miss" if r.rank == float("inf") else int(r.rank)
        rows.append((inputs.crop_images[r.matched_crop], ims, truth, f"{r.case.type} in {r.case.scene[:40]}: rank {rank}"))
    return rows


def _p2s_rows(inputs, result, rng, n):
    """Random pairs: the product image, the 5 nearest scene crops (one per scene), the true scene marked."""
    first = inputs.first_image
    pcol = {p: i for i, p in enumerate(inputs.product_ids)}
    scol = {s: i for i, s in enumerate(inputs.scenes)}
    crop_scene = np.array([scol[c.scene] for c in inputs.crops], np.int64)
    cand = [r for r in result.pairs if r.case.scene in scol]
    rows = []
    for i in sorted(rng.permutation(len(cand))[:n]):
        r = cand[i]
        d = euclidean_distances(result.product_emb[pcol[r.case.product_id]][None], result.crop_emb)[0]
        per_scene = group_min(d[None], crop_scene, len(inputs.scenes))[0]
        order = np.argsort(per_scene, kind="stable")[:5]
        ims, truth = [], []
        for s in order:
            crops = np.flatnonzero(crop_scene == s)
            ims.append(inputs.crop_images[crops[np.argmin(d[crops])]])
            truth.append(inputs.scenes[s] == r.case.scene)
        rank = "miss" if r.scene_rank == float("inf") else int(r.scene_rank)
        rows.append((inputs.product_images[first[r.case.product_id]], ims, truth, f"{r.case.type} {r.case.product_id}: true scene rank {rank}"))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())

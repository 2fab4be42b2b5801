"""``python -m evaluation.evaluate``: recall@k of a model on a catalog's room photos, against the
ImageNet baseline, logged to MLflow with plots. The protocol is in ``evaluation/protocol.py`` and
the README ("Evaluation").
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from engine.config import BACKBONES
from engine.runtime import run_cli

logger = logging.getLogger("evaluation.evaluate")

# Params every fit and evaluate run carries under the same names (the mlflow ui columns).
KEY_PARAMS = ("model.backbone", "model.weights", "model.image_size", "model.embedding_dim", "model.low_level_branch",
              "train.loss", "train.epochs", "triplets", "init_from", "holdout_scenes")


def build_parser() -> argparse.ArgumentParser:
    from evaluation.protocol import EvalConfig

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
    p.add_argument("--category-map", type=Path, default=None, help="catalog type → detector class map (default: detectors/category_map.yaml)")
    p.add_argument("--baseline", default="imagenet", help="also score 'imagenet' features of the same backbone on the same crops, 'none', or the metrics.json of an earlier evaluation")
    p.add_argument("--compare", type=Path, nargs="*", default=[], metavar="METRICS_JSON", help="also draw the recall@k curves of these earlier evaluations (their metrics.json) on the plot")
    p.add_argument("--backbone", choices=BACKBONES, default=None, help="backbone of the ImageNet features (default: the evaluated model's, else mobilenet_v2)")
    p.add_argument("--weights", default="imagenet", help="ImageNet weights of that backbone: 'imagenet' (Keras download or $SHOWROOM_WEIGHTS_DIR) or a .weights.h5 path")
    p.add_argument("--alpha", type=float, default=None, help="MobileNetV2 width of the ImageNet features (default: the evaluated run's, else 0.35)")
    p.add_argument("--image-size", type=int, default=None, help="input side for --model imagenet (default 128; a trained model uses its own)")
    p.add_argument("--min-confidence", type=float, default=d.min_confidence, help="detector confidence a proposed crop needs")
    p.add_argument("--crop-padding", type=float, default=d.crop_padding, help="padding around a crop, fraction of its longer side (as in training)")
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


def _model_run(ref: str) -> str | None:
    """The MLflow run that trained ``ref`` when it names one (a run id or a registered version)."""
    if ref == "imagenet" or Path(ref).expanduser().exists() or ref.endswith(".keras") or "/" in ref and not ref.startswith("models:/"):
        return None
    if ref.startswith("models:/"):
        from engine.runtime import state_dir
        from training.tracking import download_registered

        return download_registered(ref, state_dir() / "registry")[1] or None
    return ref


def imagenet_embed(backbone: str, weights: str, image_size: int, alpha: float):
    """(embed, feature dim): L2-normalised global-average-pooled ImageNet features of a backbone."""
    import numpy as np

    from engine.config import ModelConfig
    from engine.embed import embed_images
    from engine.model import backbone_features_model, build_embedder

    model = backbone_features_model(build_embedder(ModelConfig(backbone=backbone, weights=weights, image_size=image_size, alpha=alpha)))

    def embed(images):
        e = embed_images(model, images)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    return embed, int(model.output_shape[-1])


def _run(args: argparse.Namespace, home: Path) -> int:
    import cv2
    import numpy as np

    from detectors.cache import DetectionCache
    from detectors.category_map import DEFAULT_MAP, load_category_map
    from engine.catalog import load_catalog
    from engine.embed import embed_images, input_size, load_embedder
    from engine.splits import read_scene_list, restrict_scenes
    from evaluation import plots
    from evaluation.protocol import EvalConfig, flat_metrics, paired_difference, prepare, score, table
    from training.model_ref import resolve_model
    from training.manifest import write_json_atomic
    from training.tracking import git_commit

    t_start = time.perf_counter()
    try:
        ks = tuple(sorted({int(k) for k in args.ks.split(",") if k.strip()}))
    except ValueError:
        raise ValueError(f"--ks must be comma-separated integers, got {args.ks!r}") from None
    cfg = EvalConfig(ks=ks, min_confidence=args.min_confidence, crop_padding=args.crop_padding)
    compare = [_earlier_evaluation(path, "--compare") for path in args.compare]
    # (name, summary, curves) of the baseline: read now from a file, or scored below on the same crops
    baseline = None if args.baseline in ("none", "imagenet") else _earlier_evaluation(args.baseline, "--baseline")
    catalog = load_catalog(args.catalog)
    scenes_param = {"scenes": "all", "scenes_count": len(catalog.scenes), "scenes_sha": ""}
    eval_catalog = catalog
    if args.scenes:
        names = read_scene_list(args.scenes)
        eval_catalog = restrict_scenes(catalog, keep=names)
        scenes_param = {"scenes": str(args.scenes), "scenes_count": len(names),
                        "scenes_sha": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]}
        logger.info("evaluating %d scenes of %s (%d pairs)", len(names), args.scenes, len(eval_catalog.pairs))

    # the model, and what is known of how it was trained
    model_run = _model_run(args.model)
    run_params: dict[str, str] = {}
    if model_run:
        from training.tracking import run_params as fetch_params

        try:
            run_params = fetch_params(model_run)
        except Exception as exc:  # MLflow raises several kinds for an unknown run
            logger.warning("no MLflow params for run %s (%s)", model_run, exc)
    backbone = args.backbone or run_params.get("model.backbone") or "mobilenet_v2"
    alpha = args.alpha if args.alpha is not None else float(run_params.get("model.alpha", 0.35))
    if args.model == "imagenet":
        size = args.image_size or 128
        embed, dim = imagenet_embed(backbone, args.weights, size, alpha)
        name = f"imagenet-{backbone}"
        params = {"model": "imagenet", "model.backbone": backbone, "model.weights": args.weights, "model.image_size": size,
                  "model.embedding_dim": dim, "model.low_level_branch": False, "train.epochs": 0}
    else:
        model_path = resolve_model(args.model)
        model = load_embedder(model_path)
        if args.backbone is None and model.name.startswith("showroom_"):
            backbone = model.name.removeprefix("showroom_")
        size = input_size(model)

        def embed(images):
            return embed_images(model, images)

        name = Path(args.model).stem
        if model_run:
            from training.tracking import run_tags

            try:
                name = run_tags(model_run).get("mlflow.runName") or f"model-{model_run[:8]}"
            except ValueError:
                name = f"model-{model_run[:8]}"
        params = {"model": args.model, "model.image_size": size, "model.embedding_dim": int(model.output_shape[-1]),
                  "model.backbone": backbone, **{k: run_params[k] for k in KEY_PARAMS if k in run_params}}
    if args.image_size and args.model != "imagenet" and args.image_size != size:
        logger.warning("--image-size %d ignored: the model takes %d px", args.image_size, size)

    needs_detector = any(p.box is None for p in eval_catalog.pairs)
    detector, cache = None, None
    if needs_detector:
        from detectors.yolo import YoloDetector, default_weights

        detector = YoloDetector(args.detector_weights or default_weights())
        cache = DetectionCache(detector, home / "cache" / "detections")
    cmap = load_category_map(args.category_map or DEFAULT_MAP)
    inputs = prepare(eval_catalog, size, detector=detector, category_map=cmap, cfg=cfg, detect=cache.detect if cache else None)
    logger.info("%d scenes, %d crops, %d pairs (%d reachable) prepared in %.1fs", len(inputs.scenes), len(inputs.crops),
                len(inputs.cases), sum(c.reachable for c in inputs.cases), inputs.seconds)
    result = score(inputs, embed, cfg)

    if args.baseline == "imagenet" and args.model != "imagenet":
        b_embed, _ = imagenet_embed(backbone, args.weights, size, alpha)
        scored = score(inputs, b_embed, cfg)
        baseline = (f"imagenet-{backbone}", scored.summary, scored.curves)
        result.summary["vs_baseline"] = paired_difference(result, scored, ks)
    wall = time.perf_counter() - t_start

    out = args.out or home / "evaluations" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    report = {"name": name, "model": args.model, "model_run": model_run, "catalog": str(catalog.root),
              "catalog_fingerprint": catalog.fingerprint, **scenes_param, "params": params,
              "summary": result.summary, "curves": result.curves, "wall_seconds": wall,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if baseline is not None:
        report["baseline"] = dict(zip(("name", "summary", "curves"), baseline))
    write_json_atomic(out / "metrics.json", report)
    _write_pairs(out / "pairs.csv", result)
    curves = {name: result.curves}
    for other_name, _, other_curves in ([baseline] if baseline else []) + compare:
        curves.setdefault(other_name, other_curves)
    images = {"recall_at_k.png": plots.recall_curves(curves, f"{catalog.root.name}: {scenes_param['scenes_count']} scenes")}
    rng = np.random.default_rng(args.seed)
    images["queries_scene_to_product.png"] = plots.result_grid(_s2p_rows(inputs, result, rng, args.grid_queries))
    images["queries_product_to_scene.png"] = plots.result_grid(_p2s_rows(inputs, result, rng, args.grid_queries))
    if args.tsne_products:
        pick = np.sort(rng.permutation(len(inputs.product_ids))[: args.tsne_products])
        thumbs = inputs.product_images[[inputs.first_image[inputs.product_ids[i]] for i in pick]]
        images["tsne_products.png"] = plots.tsne_map(result.product_emb[pick], thumbs, seed=args.seed)
    for fname, im in images.items():
        cv2.imwrite(str(out / fname), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))

    rows = [(name, result.summary)] + ([baseline[:2]] if baseline else [])
    text = table(rows, [k for k in ks if k <= 20] or list(ks))
    proto = result.summary["protocol"]
    ci = result.summary["scene_to_product"]["recall_ci95"]
    k10 = 10 if 10 in ks else ks[-1]
    lines = [
        text,
        f"s2p recall@{k10} 95% interval (scene bootstrap): {_interval(ci[k10])}"
        + (f"; minus {baseline[0]}: {_signed(result.summary['vs_baseline']['scene_to_product'][k10])}" if "vs_baseline" in result.summary else ""),
        f"{catalog.root.name}: {proto['scenes']} scenes, {proto['crops']} crops, {proto['catalog_products']} products; "
        f"pairs {proto['pairs']}: reachable {proto['reachable_pairs']}, unreachable {proto['unreachable_pairs']} "
        f"(boxes: {proto['boxes']}); wall {wall:.1f}s",
    ]
    if not args.no_mlflow:
        from training.tracking import mlflow_run

        with mlflow_run(run_name=args.run_name or f"eval-{name}", experiment=args.experiment) as tracker:
            tags = {"showroom.kind": "evaluate", "showroom.catalog": catalog.root.name, "showroom.model": args.model}
            if model_run:
                tags["showroom.model_run"] = model_run
            tracker.set_tags(tags)
            tracker.log_params({**params, "catalog": str(catalog.root), "catalog_fingerprint": catalog.fingerprint, **scenes_param,
                                "detector": inputs.detector, "min_confidence": cfg.min_confidence, "crop_padding": cfg.crop_padding,
                                "git_commit": git_commit(), "baseline": baseline[0] if baseline else "none"})
            metrics = flat_metrics(result.summary)
            for t, v in result.summary["scene_to_product"]["per_type"].items():
                if v["recall"].get(10) is not None:
                    from training.dataset import metric_key

                    metrics[f"s2p_recall_at_10/{metric_key(t)}"] = v["recall"][10]
            if baseline is not None:
                metrics.update(flat_metrics(baseline[1], "baseline/"))
            metrics["eval_seconds"] = wall
            tracker.log_metrics(metrics, step=0)
            for fname in ("metrics.json", "pairs.csv", *images):
                tracker.log_artifact(out / fname)
            if args.scenes:
                tracker.log_artifact(args.scenes, "scenes")
            lines.append(f"MLflow run {tracker.run_id}: artifacts {', '.join(['metrics.json', 'pairs.csv', *images])}")
    lines.append(f"report: {out}")
    print("\n".join(lines))
    return 0


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


def _write_pairs(path: Path, result) -> None:
    """One row per pair: its ranks (empty = never found) and the crop that matched."""
    def fmt(v):
        return "" if v == float("inf") else int(v)

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["product_id", "type", "scene", "reachable", "box_source", "rank", "rank_any_crop", "scene_rank"])
        for r in result.pairs:
            c = r.case
            w.writerow([c.product_id, c.type, c.scene, int(c.reachable), c.box_source, fmt(r.rank), fmt(r.rank_any), fmt(r.scene_rank)])


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
    import numpy as np

    from evaluation.metrics import euclidean_distances, group_min

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

"""``python -m training.fit``: train the triplet embedder on a catalog, tracked in MLflow.

Without ``--catalog`` it trains on the built-in procedural demo catalog (generated once).
One MLflow run per call: params (whole config, seed, git commit, catalog fingerprint), metrics
per epoch (step 0 = before training), artifacts (embedder ``.keras``, config, split, a sheet of
sample triplets). A checkpoint is written after every epoch; ``--resume RUN_ID`` (or ``last``)
continues a killed run where it stopped.

This module is the command line only: it turns the flags into frozen configs (``ModelConfig``,
``TrainConfig``, ``training.run_plan.DataConfig``, ``training.trainer.RunOptions``), plans the run
(``training.run_plan``) and hands it to ``training.trainer.Trainer``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from detectors.cache import cached_detect
from detectors.category_map import load_category_map, map_for_detector
from detectors.yolo import WEIGHTS_ENV, YoloDetector
from engine.index.tuning import TuningConfig
from engine.index.views import DEFAULT_WEIGHT as VIEWS_WEIGHT
from engine.config import BACKBONES, DISTRIBUTE, LOSSES, ModelConfig, TrainConfig
from engine.runtime import run_cli
from training.query_sources import SOURCE_NAMES, check_mix
from training.tracking import run_metrics

if TYPE_CHECKING:
    from engine.data.catalog import Catalog
    from training.run_plan import DataConfig, RunPlan
    from engine.index.views import ProductViews

logger = logging.getLogger("training.fit")

# Defaults of the flags left unset: for a real catalog those the IKEA ablation chose (README
# "Results"); the demo keeps small, fast settings so its default run stays near 10 minutes on 2 cores.
CATALOG_DEFAULTS = {"image_size": 224, "train_backbone": "30", "epochs": 6, "in_class_negatives": 1, "out_class_negatives": 1,
                    "softmax_weight": 1.0, "mix": "real=1,synthetic=2,lifestyle=0.05", "queries_per_epoch": 3000,
                    "one_pass": True}
DEMO_DEFAULTS = {"image_size": ModelConfig.image_size, "train_backbone": ModelConfig.train_backbone, "epochs": TrainConfig.epochs,
                 "in_class_negatives": TrainConfig.in_class_negatives, "out_class_negatives": TrainConfig.out_class_negatives,
                 "softmax_weight": TrainConfig.softmax_weight, "mix": TrainConfig.mix, "queries_per_epoch": TrainConfig.queries_per_epoch,
                 "one_pass": TrainConfig.one_pass}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.fit",
        description="Train the Showroom triplet embedder on a catalog (default: the built-in demo catalog) and log the run to MLflow.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _data_flags(p.add_argument_group("data"))
    _model_flags(p.add_argument_group("model"), ModelConfig())
    _training_flags(p.add_argument_group("training"), TrainConfig())
    _run_flags(p.add_argument_group("run"))
    return p


def _data_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--catalog", type=Path, default=None, help="catalog directory (products.csv, scenes.csv, pairs.csv); omit to use the generated demo catalog")
    g.add_argument("--demo-seed", type=int, default=7, help="seed of the generated demo catalog (only without --catalog)")
    g.add_argument("--triplets", type=Path, default=None, help="triplet manifest from training.mine_triplets / mine_hard_negatives (queries and their negatives); its catalog is used when --catalog is omitted")
    g.add_argument("--detector-weights", default=None, help="(default: $SHOWROOM_DETECTOR_WEIGHTS, else yolo11n.pt) when pairs have no boxes and no --triplets is given, mine them first with this YOLO .pt/.onnx/.tflite (a bare name downloads)")
    g.add_argument("--whole-scene-queries", action="store_true", help="do not mine: pairs without a box use the whole scene as the query")
    g.add_argument("--holdout-scenes", type=Path, default=None, metavar="FILE", help="scene list (python -m evaluation.holdout) never used here, neither for training nor validation: the evaluation split. Scenes a --triplets manifest was mined without are held out too")
    g.add_argument("--holdout-products", type=Path, default=None, metavar="FILE", help="product list (python -m evaluation.holdout --new-products) of products that do not exist for this run: no proxy, catalog image, query, negative or synthetic view of theirs; the final index still holds them (added after training). Products a --triplets manifest was made without are held out too")
    g.add_argument("--init-from", default=None, metavar="RUN_OR_PATH", help="start from a trained embedder (.keras path or MLflow run id) instead of --weights; D is taken from it, and the image size unless --image-size gives another (fine-tuning at a new size)")
    g.add_argument("--synthetic", type=Path, default=None, metavar="MANIFEST", help="synthetic in-room views of the catalog's products (python -m training.synthesize): extra training queries; views pasted into validation or held-out scenes are left out")
    g.add_argument("--mix", default=None, help=f"shares of each epoch's queries by query source ({', '.join(SOURCE_NAMES)}: real room-photo crops, synthetic views, product photos not on white) ('' = every query once per epoch; default: {CATALOG_DEFAULTS['mix']!r} for a catalog, {DEMO_DEFAULTS['mix']!r} for the demo)")
    g.add_argument("--queries-per-epoch", type=int, default=None, help=f"queries drawn per epoch by --mix (0 = the number of training queries; default: {CATALOG_DEFAULTS['queries_per_epoch']} for a catalog, {DEMO_DEFAULTS['queries_per_epoch']} for the demo)")


def _model_flags(g: argparse._ArgumentGroup, m: ModelConfig) -> None:
    g.add_argument("--backbone", default=m.backbone, help=f"ImageNet CNN: {', '.join(BACKBONES)} (mobilenet_v2 for CPU; the others on a GPU), or any keras.applications class name, e.g. EfficientNetV2S, ConvNeXtTiny (give --weights its no-top .weights.h5 offline)")
    g.add_argument("--weights", default=m.weights, help="backbone init: 'imagenet' (Keras download, or $SHOWROOM_WEIGHTS_DIR mirror), 'none', or a .weights.h5 path")
    g.add_argument("--image-size", type=int, default=None, help=f"square input side in pixels (default: {CATALOG_DEFAULTS['image_size']} for a catalog, {DEMO_DEFAULTS['image_size']} for the demo; 299 suits the big backbones on a GPU)")
    g.add_argument("--alpha", type=float, default=m.alpha, help="MobileNetV2 width multiplier")
    g.add_argument("--embedding-dim", type=int, default=m.embedding_dim, help="D, the embedding size")
    g.add_argument("--no-low-level-branch", action="store_true", help="ablation: drop the shallow conv branch on the downsampled image")
    g.add_argument("--no-l2-normalize", action="store_true", help="do not L2-normalise embeddings")
    g.add_argument("--train-backbone", default=None, help=f"which backbone layers train: 'all', 'none', or N (the last N layers) (default: {CATALOG_DEFAULTS['train_backbone']} for a catalog, {DEMO_DEFAULTS['train_backbone']} for the demo)")


def _training_flags(g: argparse._ArgumentGroup, t: TrainConfig) -> None:
    g.add_argument("--epochs", type=int, default=None, help=f"epochs over freshly sampled triplets (default: {CATALOG_DEFAULTS['epochs']} for a catalog, {DEMO_DEFAULTS['epochs']} for the demo)")
    g.add_argument("--batch-size", type=int, default=t.batch_size, help="triplets per step (global batch under tf.distribute)")
    g.add_argument("--learning-rate", type=float, default=t.learning_rate, help="Adam learning rate")
    g.add_argument("--margin", type=float, default=t.margin, help="triplet margin m")
    g.add_argument("--loss", choices=LOSSES, default=t.loss, help="the triplet term: hinge: mean(max(0, m + d(q,p) - d(q,n))); batch_hard / semi_hard: in-batch mining (TFA semantics)")
    g.add_argument("--triplet-weight", type=float, default=t.triplet_weight, help="weight of the triplet term")
    g.add_argument("--softmax-weight", type=float, default=None, help=f"weight of the proxy softmax over every catalog product (one proxy per product, initialised from its catalog photo's embedding; 0 = off; default: {CATALOG_DEFAULTS['softmax_weight']} for a catalog, {DEMO_DEFAULTS['softmax_weight']} for the demo)")
    g.add_argument("--type-softmax-weight", type=float, default=t.type_softmax_weight, help="weight of the proxy softmax over product types (0 = off)")
    g.add_argument("--temperature", type=float, default=t.temperature, help="temperature of the softmax terms (cosine logits / T)")
    g.add_argument("--proxy-margin", type=float, default=t.proxy_margin,
                   help="CosFace margin m of the softmax terms: the own class scores (cos - m) / T (0 = none)")
    g.add_argument("--one-pass", action=argparse.BooleanOptionalAction, default=None,
                   help="embed query, positive and negative as one batch (shared batch-norm statistics) rather than three "
                        f"(default: {CATALOG_DEFAULTS['one_pass']} for a catalog, {DEMO_DEFAULTS['one_pass']} for the demo)")
    g.add_argument("--batch-products", type=int, default=t.batch_products, help="P > 0: class-balanced batches of P products x batch-size/P triplets (for batch_hard / semi_hard); 0 = shuffled")
    g.add_argument("--in-class-negatives", type=int, default=None, help=f"negatives per positive from the same category, resampled each epoch (default: {CATALOG_DEFAULTS['in_class_negatives']} for a catalog, {DEMO_DEFAULTS['in_class_negatives']} for the demo)")
    g.add_argument("--out-class-negatives", type=int, default=None, help=f"negatives per positive from other categories, resampled each epoch (default: {CATALOG_DEFAULTS['out_class_negatives']} for a catalog, {DEMO_DEFAULTS['out_class_negatives']} for the demo)")
    g.add_argument("--crop-padding", type=float, default=t.crop_padding, help="padding around a query box, as a fraction of its longer side")
    g.add_argument("--val-fraction", type=float, default=t.val_fraction, help="share of scenes held out for validation")
    g.add_argument("--max-triplets-per-epoch", type=int, default=t.max_triplets_per_epoch, help="cap on triplets per epoch (0 = all)")
    g.add_argument("--no-augment", action="store_true", help="turn off augmentation")
    g.add_argument("--seed", type=int, default=t.seed, help="seed for the split, sampling, augmentation and initialisation")
    g.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPU)")
    g.add_argument("--distribute", choices=DISTRIBUTE, default=t.distribute,
                   help="tf.distribute: 'auto' mirrors over all GPUs when there are several; 'multi_worker' trains on the "
                        "workers of TF_CONFIG (every worker runs the same command; --batch-size is the global batch)")


def _run_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--run-name", default=None, help="MLflow run name")
    g.add_argument("--experiment", default="showroom", help="MLflow experiment")
    g.add_argument("--resume", default=None, metavar="RUN_ID", help="continue a killed run from its last checkpoint ('last' = most recent); other flags are taken from the run")
    g.add_argument("--out", type=Path, default=None, help="also copy the final embedder .keras here")
    g.add_argument("--no-index", action="store_true", help="do not build the search indexes (products, scene crops) at the end")
    g.add_argument("--target-recall", type=float, default=0.95, help="recall@10 against exact search the built indexes are tuned to (0 = untuned defaults)")
    g.add_argument("--index-views-weight", type=float, default=VIEWS_WEIGHT,
                   help="the built products index blends each photo's vector with its product's --synthetic views at this weight "
                        "(engine.index.views, as build_index --views; views pasted into held-out scenes are left out; 0 = photos alone)")
    g.add_argument("--verbose", action="store_true", help="debug logging")


def configs_from_args(args: argparse.Namespace, demo: bool = False) -> tuple[ModelConfig, TrainConfig]:
    """The configs of the flags; flags left unset take the catalog or the demo default."""
    defaults = DEMO_DEFAULTS if demo else CATALOG_DEFAULTS

    def pick(name: str):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    model = ModelConfig(
        backbone=args.backbone, weights=args.weights, image_size=pick("image_size"), alpha=args.alpha,
        embedding_dim=args.embedding_dim, low_level_branch=not args.no_low_level_branch,
        l2_normalize=not args.no_l2_normalize, train_backbone=pick("train_backbone"),
    )
    train = TrainConfig(
        epochs=pick("epochs"), batch_size=args.batch_size, learning_rate=args.learning_rate, margin=args.margin,
        loss=args.loss, in_class_negatives=pick("in_class_negatives"), out_class_negatives=pick("out_class_negatives"),
        crop_padding=args.crop_padding, val_fraction=args.val_fraction, max_triplets_per_epoch=args.max_triplets_per_epoch,
        augment=not args.no_augment, seed=args.seed, mixed_precision=args.mixed_precision, distribute=args.distribute,
        triplet_weight=args.triplet_weight, softmax_weight=pick("softmax_weight"), type_softmax_weight=args.type_softmax_weight,
        temperature=args.temperature, proxy_margin=args.proxy_margin, mix=pick("mix"), queries_per_epoch=pick("queries_per_epoch"), batch_products=args.batch_products,
        one_pass=pick("one_pass"),
    )
    check_mix(train.mix_weights())
    return model, train


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    """The data flags as a ``DataConfig``, its catalog taken from --triplets or --synthetic when --catalog is omitted."""
    from training.run_plan import DataConfig, resolve_catalog

    return resolve_catalog(DataConfig(
        catalog=args.catalog, demo_seed=args.demo_seed, triplets=args.triplets, synthetic=args.synthetic,
        holdout_scenes=args.holdout_scenes, holdout_products=args.holdout_products, init_from=args.init_from or "",
        init_size=(args.image_size or 0) if args.init_from else 0, detector_weights=args.detector_weights,
        whole_scene_queries=args.whole_scene_queries,
    ))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.index_views_weight >= 0:
        parser.error(f"--index-views-weight must be >= 0, got {args.index_views_weight}")
    return run_cli(lambda home: _run(args, home, argv), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace, home: Path, argv: Sequence[str]) -> int:
    # these load TensorFlow: imported here, once run_cli has set the environment
    from training import checkpoint as ckpt
    from training.run_plan import resume_plan
    from training.strategy import job_key, make_cluster
    from training.trainer import RunOptions, Trainer

    cluster = make_cluster(args.distribute)  # before any other TensorFlow call
    job = ckpt.run_folder(home, job_key(argv)) if cluster.multi_worker else None
    if job is not None and ckpt.epochs_done(job) > 0:
        logger.info("%s: resuming multi-worker job %s from its last backup", cluster.task, job.name)
        plan = resume_plan(job)
    elif args.resume:
        plan = resume_plan(ckpt.run_folder(home, ckpt.latest_run(home) if args.resume == "last" else args.resume))
    else:
        plan = _new_plan(args, home)
    options = RunOptions(run_name=args.run_name, experiment=args.experiment, out=args.out)
    build_index = None if args.no_index else partial(_build_indexes, args, home=home, views=_index_views(plan, args.index_views_weight))
    result = Trainer(plan, cluster, home, options=options, job=job, build_index=build_index).run()
    if result.folder is None:
        print(f"{cluster.task}: done; the chief logged the run and saved the model")
        return 0
    print(_final_summary(result.run_id))
    print(f"embedder: {result.folder / 'embedder.keras'}  (MLflow artifact model/embedder.keras of run {result.run_id})")
    return 0


def _new_plan(args: argparse.Namespace, home: Path) -> RunPlan:
    """The plan of the flags: configs whose unset flags take the catalog's or the demo's defaults."""
    from training.run_plan import new_plan

    data = data_config_from_args(args)
    model, train = configs_from_args(args, demo=data.catalog is None)
    return new_plan(model, train, data, home)


def _index_views(plan: RunPlan, weight: float) -> ProductViews | None:
    """The run's synthetic views to blend into its products index at ``weight``, without those pasted
    into a held-out scene; None when the run has none or ``weight`` is 0."""
    from training.synthesis import synthetic_views

    if weight <= 0 or plan.data.synthetic is None:
        return None
    return synthetic_views(plan.data.synthetic, plan.catalog, weight).outside(plan.holdout)


def _build_indexes(args: argparse.Namespace, model_path: Path, catalog: Catalog, out: Path, home: Path,
                   views: ProductViews | None = None) -> Path:
    """The serving folder of the catalog with the final model: ``out/{model.keras,products,scenes}``,
    ``views`` blended into the products index (``engine.index.views``)."""
    from engine.index.backends import BackendSpec
    from engine.index.serving_folder import build_serving_folder
    from engine.model.embedder import load_preprocessing

    detect = None
    classes = load_category_map().classes
    weights = args.detector_weights or os.environ.get(WEIGHTS_ENV)
    if weights and any(p.box is None for p in catalog.pairs):
        detect = cached_detect(weights, load_preprocessing(model_path).detector_confidence, home / "cache" / "detections")
        classes = map_for_detector(YoloDetector(weights).class_names, check=False).classes  # the groups for a detector of them
    build_serving_folder(model_path, catalog, out, detect, backend=BackendSpec(), classes=classes,
                         tuning=TuningConfig(target_recall=args.target_recall) if args.target_recall > 0 else None, views=views)
    return out


def _final_summary(run_id: str) -> str:
    hist = run_metrics(run_id)
    lines = [f"run {run_id}"]
    for key in ("val_distance_accuracy", "val_distance_accuracy_top_3", "val_absolute_accuracy", "val_loss"):
        if key in hist and hist[key]:
            first, last = hist[key][0], hist[key][-1]
            lines.append(f"  {key}: epoch {first[0]} = {first[1]:.4f} -> epoch {last[0]} = {last[1]:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m training.fit``: train the triplet embedder on a catalog, tracked in MLflow.

Without ``--catalog`` it trains on the built-in procedural demo catalog (generated once).
One MLflow run per call: params (whole config, seed, git commit, catalog fingerprint), metrics
per epoch (step 0 = before training), artifacts (embedder ``.keras``, config, split, a sheet of
sample triplets). A checkpoint is written after every epoch; ``--resume RUN_ID`` (or ``last``)
continues a killed run where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf

from detectors.cache import DetectionCache
from detectors.category_map import load_category_map
from detectors.yolo import WEIGHTS_ENV, YoloDetector, default_weights
from engine.index.tuning import TuningConfig
from engine.index.serving_folder import build_serving_folder
from engine.data.catalog import Catalog, CatalogError, load_catalog
from engine.config import BACKBONES, DISTRIBUTE, LOSSES, ModelConfig, Preprocessing, TrainConfig, flatten, from_dict
from engine.model.embedder import Embedder, ModelError, embed_images, input_size, load_embedder, load_preprocessing, save_embedder
from engine.files import atomic_file
from engine.model.network import TripletModel, build_embedder
from engine.runtime import run_cli
from engine.data.splits import read_scene_list, restrict_scenes, write_scene_list
from training import checkpoint as ckpt
from training.callbacks import EpochEnd, log_epoch
from training.demo_catalog import DemoSpec, ensure_demo_catalog
from training.strategy import Cluster, JobBackup, NullTracker, job_key, make_cluster, shard_by_data
from training.manifest import load_manifest, save_manifest
from training.mining import MiningConfig, mine_catalog
from training.model_ref import resolve_model
from training.input_pipeline import steps_per_epoch, triplet_dataset, triplet_sheet
from training.tracking import Tracker, git_commit, mlflow_run, run_metrics
from training.synthesis import load_synthetic_manifest
from training.training_set import TrainingSet, build_training_set, probe_metrics, queries_from_manifest, queries_from_pairs, queries_from_synthetic
from training.triplets import Triplets

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
    m, t = ModelConfig(), TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m training.fit",
        description="Train the Showroom triplet embedder on a catalog (default: the built-in demo catalog) and log the run to MLflow.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--catalog", type=Path, default=None, help="catalog directory (products.csv, scenes.csv, pairs.csv); omit to use the generated demo catalog")
    g.add_argument("--demo-seed", type=int, default=7, help="seed of the generated demo catalog (only without --catalog)")
    g.add_argument("--triplets", type=Path, default=None, help="triplet manifest from training.mine_triplets / mine_hard_negatives (queries and their negatives); its catalog is used when --catalog is omitted")
    g.add_argument("--detector-weights", default=None, help="(default: $SHOWROOM_DETECTOR_WEIGHTS, else yolo11n.pt) when pairs have no boxes and no --triplets is given, mine them first with this YOLO .pt/.onnx/.tflite (a bare name downloads)")
    g.add_argument("--whole-scene-queries", action="store_true", help="do not mine: pairs without a box use the whole scene as the query")
    g.add_argument("--holdout-scenes", type=Path, default=None, metavar="FILE", help="scene list (python -m evaluation.holdout) never used here, neither for training nor validation: the evaluation split. Scenes a --triplets manifest was mined without are held out too")
    g.add_argument("--init-from", default=None, metavar="RUN_OR_PATH", help="start from a trained embedder (.keras path or MLflow run id) instead of --weights; image size and D are taken from it")
    g.add_argument("--synthetic", type=Path, default=None, metavar="MANIFEST", help="synthetic in-room views of the catalog's products (python -m training.synthesize): extra training queries; views pasted into validation or held-out scenes are left out")
    g.add_argument("--mix", default=None, help=f"shares of each epoch's queries by source: real room-photo crops, synthetic views, product photos not on white ('' = every query once per epoch; default: {CATALOG_DEFAULTS['mix']!r} for a catalog, {DEMO_DEFAULTS['mix']!r} for the demo)")
    g.add_argument("--queries-per-epoch", type=int, default=None, help=f"queries drawn per epoch by --mix (0 = the number of training queries; default: {CATALOG_DEFAULTS['queries_per_epoch']} for a catalog, {DEMO_DEFAULTS['queries_per_epoch']} for the demo)")
    g = p.add_argument_group("model")
    g.add_argument("--backbone", choices=BACKBONES, default=m.backbone, help="ImageNet CNN: mobilenet_v2 for CPU; xception or inception_resnet_v2 on a GPU")
    g.add_argument("--weights", default=m.weights, help="backbone init: 'imagenet' (Keras download, or $SHOWROOM_WEIGHTS_DIR mirror), 'none', or a .weights.h5 path")
    g.add_argument("--image-size", type=int, default=None, help=f"square input side in pixels (default: {CATALOG_DEFAULTS['image_size']} for a catalog, {DEMO_DEFAULTS['image_size']} for the demo; 299 suits the big backbones on a GPU)")
    g.add_argument("--alpha", type=float, default=m.alpha, help="MobileNetV2 width multiplier")
    g.add_argument("--embedding-dim", type=int, default=m.embedding_dim, help="D, the embedding size")
    g.add_argument("--no-low-level-branch", action="store_true", help="ablation: drop the shallow conv branch on the downsampled image")
    g.add_argument("--no-l2-normalize", action="store_true", help="do not L2-normalise embeddings")
    g.add_argument("--train-backbone", default=None, help=f"which backbone layers train: 'all', 'none', or N (the last N layers) (default: {CATALOG_DEFAULTS['train_backbone']} for a catalog, {DEMO_DEFAULTS['train_backbone']} for the demo)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None, help=f"epochs over freshly sampled triplets (default: {CATALOG_DEFAULTS['epochs']} for a catalog, {DEMO_DEFAULTS['epochs']} for the demo)")
    g.add_argument("--batch-size", type=int, default=t.batch_size, help="triplets per step (global batch under tf.distribute)")
    g.add_argument("--learning-rate", type=float, default=t.learning_rate, help="Adam learning rate")
    g.add_argument("--margin", type=float, default=t.margin, help="triplet margin m")
    g.add_argument("--loss", choices=LOSSES, default=t.loss, help="the triplet term: hinge: mean(max(0, m + d(q,p) - d(q,n))); batch_hard / semi_hard: in-batch mining (TFA semantics)")
    g.add_argument("--triplet-weight", type=float, default=t.triplet_weight, help="weight of the triplet term")
    g.add_argument("--softmax-weight", type=float, default=None, help=f"weight of the proxy softmax over every catalog product (one proxy per product, initialised from its catalog photo's embedding; 0 = off; default: {CATALOG_DEFAULTS['softmax_weight']} for a catalog, {DEMO_DEFAULTS['softmax_weight']} for the demo)")
    g.add_argument("--type-softmax-weight", type=float, default=t.type_softmax_weight, help="weight of the proxy softmax over product types (0 = off)")
    g.add_argument("--temperature", type=float, default=t.temperature, help="temperature of the softmax terms (cosine logits / T)")
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
    g = p.add_argument_group("run")
    g.add_argument("--run-name", default=None, help="MLflow run name")
    g.add_argument("--experiment", default="showroom", help="MLflow experiment")
    g.add_argument("--resume", default=None, metavar="RUN_ID", help="continue a killed run from its last checkpoint ('last' = most recent); other flags are taken from the run")
    g.add_argument("--out", type=Path, default=None, help="also copy the final embedder .keras here")
    g.add_argument("--no-index", action="store_true", help="do not build the search indexes (products, scene crops) at the end")
    g.add_argument("--target-recall", type=float, default=0.95, help="recall@10 against exact search the built indexes are tuned to (0 = untuned defaults)")
    g.add_argument("--verbose", action="store_true", help="debug logging")
    return p


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
        temperature=args.temperature, mix=pick("mix"), queries_per_epoch=pick("queries_per_epoch"), batch_products=args.batch_products,
        one_pass=pick("one_pass"),
    )
    return model, train


@dataclass
class RunPlan:
    """Everything a run trains from, resolved from the flags (or from a killed run's state).

    resume: the killed run's state (``training.checkpoint``), None for a new run.
    init_model: a trained embedder to start from (``--init-from``).
    """

    model: ModelConfig
    train: TrainConfig
    catalog: Catalog
    triplets: Path | None
    holdout: set[str]
    synthetic: Path | None = None
    init_from: str = ""
    init_model: keras.Model | None = None
    resume: dict | None = None

    @property
    def preprocessing(self) -> Preprocessing:
        """What the trained embedder is saved with, and every consumer reads."""
        return Preprocessing(image_size=self.model.image_size, crop_padding=self.train.crop_padding)

    def state(self, run_id: str) -> dict:
        """What a resume needs to rebuild this run."""
        return {"run_id": run_id, "model": asdict(self.model), "train": asdict(self.train), "catalog": str(self.catalog.root),
                "catalog_fingerprint": self.catalog.fingerprint, "triplets": str(self.triplets) if self.triplets else None,
                "synthetic": str(self.synthetic) if self.synthetic else None,
                "holdout_scenes": sorted(self.holdout), "init_from": self.init_from}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_cli(lambda home: _run(args, home, argv), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace, home: Path, argv: Sequence[str]) -> int:
    cluster = make_cluster(args.distribute)  # before any other TensorFlow call
    job = ckpt.run_folder(home, job_key(argv)) if cluster.multi_worker else None
    if job is not None and ckpt.epochs_done(job) > 0:
        logger.info("%s: resuming multi-worker job %s from its last backup", cluster.task, job.name)
        plan = _resume_plan(args, home, job)
    else:
        plan = _resume_plan(args, home) if args.resume else _new_plan(args, home)
    if plan.train.batch_size % cluster.strategy.num_replicas_in_sync:
        raise ValueError(f"--batch-size {plan.train.batch_size} (the global batch) must be a multiple of the "
                         f"{cluster.strategy.num_replicas_in_sync} replicas")
    ts = _training_set(plan)
    keras.utils.set_random_seed(plan.train.seed)
    if plan.train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    val_trip = ts.val_sampler.sample(plan.train.seed + 10_000)  # fixed validation triplets
    val_ds = shard_by_data(triplet_dataset(ts.bank, [val_trip], batch_size=plan.train.batch_size, augment=False, seed=plan.train.seed), cluster)
    run_kwargs = {"run_id": plan.resume["run_id"]} if plan.resume else {"run_name": args.run_name, "experiment": args.experiment}
    tracking = mlflow_run(**run_kwargs) if cluster.chief else contextlib.nullcontext(NullTracker(f"{job.name}-{cluster.task}"))
    with tracking as tracker:
        embedder, model = _compile(plan, cluster, ts)
        folder = job or ckpt.run_folder(home, tracker.run_id)
        probes = _probes(embedder, ts, plan.train.seed, cluster)
        if plan.resume:
            model(next(iter(val_ds)))  # BackupAndRestore restores into a built model
        else:
            if cluster.chief:
                ckpt.write_run_state(folder, plan.state(tracker.run_id))
            _log_start(tracker, plan, ts, len(val_trip), model, val_ds, probes)
        epochs = _train(plan, ts, model, val_ds, probes, tracker, folder, cluster)
        sample = epochs[0] if epochs else ts.train_sampler.sample(plan.train.seed)
        if not cluster.chief:  # saved like the chief's (TensorFlow's pattern), to a folder that is then deleted
            with tempfile.TemporaryDirectory(prefix="showroom-worker-") as tmp:
                save_embedder(embedder, Path(tmp) / "embedder.keras", plan.preprocessing)
            print(f"{cluster.task}: done; the chief logged the run and saved the model")
            return 0
        local = _save_outputs(args, plan, ts, embedder, tracker, home, sample)
        ckpt.finish(folder)
        final = _final_summary(tracker.run_id)
    print(final)
    print(f"embedder: {local / 'embedder.keras'}  (MLflow artifact model/embedder.keras of run {tracker.run_id})")
    return 0


def _new_plan(args: argparse.Namespace, home: Path) -> RunPlan:
    """Configs from the flags; the catalog (the demo one by default); triplets mined first when
    pairs have no boxes; held-out scenes; the model to start from."""
    holdout = set(read_scene_list(args.holdout_scenes)) if args.holdout_scenes else set()
    triplets = args.triplets
    catalog_dir = args.catalog
    if catalog_dir is None and triplets is not None:
        catalog_dir = Path(load_manifest(triplets).catalog)
    if catalog_dir is None and args.synthetic is not None:
        catalog_dir = Path(load_synthetic_manifest(args.synthetic).catalog)
    mcfg, tcfg = configs_from_args(args, demo=catalog_dir is None)
    if catalog_dir is None:
        catalog_dir = ensure_demo_catalog(home, DemoSpec(seed=args.demo_seed))
    init_model = None
    if args.init_from:
        init_model = load_embedder(resolve_model(args.init_from).path)
        mcfg = replace(mcfg, image_size=input_size(init_model), embedding_dim=int(init_model.output_shape[-1]), weights="none")
        logger.info("initialising from %s (input %d px, D=%d)", args.init_from, mcfg.image_size, mcfg.embedding_dim)
    catalog = load_catalog(catalog_dir)
    if triplets is None and not args.whole_scene_queries and any(p.box is None for p in catalog.pairs):
        triplets = _auto_mine(args, mcfg, tcfg, catalog, holdout, home)
    return RunPlan(mcfg, tcfg, catalog, triplets, holdout, args.synthetic, args.init_from or "", init_model)


def _resume_plan(args: argparse.Namespace, home: Path, folder: Path | None = None) -> RunPlan:
    """The plan of a killed run, from its checkpoint state (``folder``: a multi-worker job's); the
    catalog must not have changed."""
    if folder is None:
        run_id = ckpt.latest_run(home) if args.resume == "last" else args.resume
        folder = ckpt.run_folder(home, run_id)
    state = ckpt.read_run_state(folder)
    run_id = state["run_id"]
    catalog = load_catalog(state["catalog"])
    if catalog.fingerprint != state["catalog_fingerprint"]:
        raise CatalogError(
            f"{state['catalog']} changed since run {run_id} started (fingerprint {catalog.fingerprint} "
            f"vs {state['catalog_fingerprint']}); start a new run instead of --resume"
        )
    mcfg, tcfg = from_dict(ModelConfig, state["model"]), from_dict(TrainConfig, state["train"])
    logger.info("resuming run %s after epoch %d of %d", run_id, state["epochs_done"], tcfg.epochs)
    triplets = Path(state["triplets"]) if state.get("triplets") else None
    synthetic = Path(state["synthetic"]) if state.get("synthetic") else None
    return RunPlan(replace(mcfg, weights="none"), tcfg, catalog, triplets, set(state.get("holdout_scenes") or ()),
                   synthetic, state.get("init_from", ""), resume=state)


def _training_set(plan: RunPlan) -> TrainingSet:
    """Queries (mined triplets or pairs.csv, and synthetic views), without held-out scenes (neither
    as photos nor as backgrounds); split, image bank, samplers."""
    queries = None
    if plan.triplets:
        manifest = load_manifest(plan.triplets)
        plan.holdout |= set(manifest.holdout_scenes)
        queries = queries_from_manifest(manifest, plan.catalog)
    train_catalog = plan.catalog
    if plan.holdout:
        train_catalog = restrict_scenes(plan.catalog, drop=plan.holdout)
        if queries is not None:
            queries = [q for q in queries if q.scene not in plan.holdout]
        logger.info("holding out %d scenes for evaluation: never trained or validated on", len(plan.holdout))
    if plan.synthetic:
        views = queries_from_synthetic(load_synthetic_manifest(plan.synthetic), plan.catalog)
        leaked = sum(v.background in plan.holdout for v in views)
        if leaked:
            logger.warning("%d synthetic views are pasted into held-out scenes: left out (synthesize with the same --holdout-scenes)", leaked)
        queries = (queries if queries is not None else queries_from_pairs(train_catalog)) + [v for v in views if v.background not in plan.holdout]
    return build_training_set(train_catalog, plan.train, plan.model.image_size, queries)


def _compile(plan: RunPlan, cluster: Cluster, ts: TrainingSet) -> tuple[keras.Model, TripletModel]:
    """The embedder (from --init-from's weights when given) and its compiled training wrapper, with
    product (and type) proxies initialised from the embedder's view of each product's first photo."""
    tcfg = plan.train
    with cluster.strategy.scope():
        embedder = build_embedder(plan.model)
        if plan.init_model is not None:
            try:
                embedder.set_weights(plan.init_model.get_weights())
            except ValueError as exc:
                raise ModelError(
                    f"--init-from {plan.init_from} has a different architecture ({exc}); pass the same --backbone, "
                    "--alpha and --no-low-level-branch/--no-l2-normalize as the run that trained it"
                ) from None
        proxies = type_index = type_proxies = None
        if tcfg.softmax_weight > 0 or tcfg.type_softmax_weight > 0:
            proxies = _initial_proxies(_embed_fn(embedder, cluster), ts, zeros=plan.resume is not None)  # a resume restores the trained ones
            types = sorted(set(ts.product_types))
            type_index = np.array([types.index(t) for t in ts.product_types], np.int32)
            type_proxies = np.stack([proxies[type_index == i].mean(0) for i in range(len(types))])
        model = TripletModel(embedder, margin=tcfg.margin, loss=tcfg.loss, triplet_weight=tcfg.triplet_weight,
                             softmax_weight=tcfg.softmax_weight, temperature=tcfg.temperature, proxies=proxies,
                             type_weight=tcfg.type_softmax_weight, product_types=type_index, type_proxies=type_proxies,
                             one_pass=tcfg.one_pass)
        model.compile(optimizer=keras.optimizers.Adam(tcfg.learning_rate))
    return embedder, model


def _embed_fn(embedder: keras.Model, cluster: Cluster) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (N, S, S, 3) -> float32 (N, D) with the model being trained. Under several workers
    ``predict`` would gather every worker's copy of the batch, so each worker calls the model itself."""
    if not cluster.multi_worker:
        return lambda images: embed_images(embedder, images, batch_size=64)

    def local(images: np.ndarray) -> np.ndarray:
        parts = [np.asarray(embedder(images[i : i + 64].astype(np.float32), training=False)) for i in range(0, len(images), 64)]
        return np.concatenate(parts) if parts else np.zeros((0, int(embedder.output_shape[-1])), np.float32)

    return local


def _initial_proxies(embed: Callable[[np.ndarray], np.ndarray], ts: TrainingSet, zeros: bool) -> np.ndarray:
    """float32 (P, D): each product's first catalog photo embedded by the untrained embedder, in label order."""
    if zeros:
        return np.zeros((len(ts.product_ids), int(embed(ts.bank[:1]).shape[-1])), np.float32)
    logger.info("initialising %d product proxies from their catalog photos", len(ts.product_ids))
    return embed(ts.bank[[ts.first_image(p) for p in ts.product_ids]])


def _probes(embedder: keras.Model, ts: TrainingSet, seed: int, cluster: Cluster) -> Callable[[int], dict[str, float]]:
    """distance_accuracy and the collapse watch on validation and training queries, for one epoch."""
    embed = _embed_fn(embedder, cluster)

    def probes(step: int) -> dict[str, float]:
        out = probe_metrics(embed, ts, ts.val_queries, "val_", seed=seed)
        out.update(probe_metrics(embed, ts, ts.real_train_queries, "train_", seed=seed))
        return out

    return probes


def _log_start(tracker: Tracker, plan: RunPlan, ts: TrainingSet, n_val_triplets: int, model: TripletModel,
               val_ds: tf.data.Dataset, probes: Callable[[int], dict[str, float]]) -> None:
    """Params, tags and the step-0 metrics (before training) of a new run."""
    catalog = plan.catalog
    tracker.log_params(
        {**flatten("model", plan.model), **flatten("train", plan.train), "seed": plan.train.seed, "git_commit": git_commit(),
         "catalog": str(catalog.root), "catalog_fingerprint": catalog.fingerprint,
         "n_products": len(ts.product_ids), "n_train_queries": len(ts.train_queries),
         "n_val_queries": len(ts.val_queries), "n_val_triplets": n_val_triplets,
         "whole_scene_queries": ts.whole_scene_queries, "tensorflow_devices": _devices(),
         "triplets": str(plan.triplets or ""), "init_from": plan.init_from, "holdout_scenes": len(plan.holdout),
         "synthetic": str(plan.synthetic or ""), "dropped_synthetic_val_backgrounds": ts.dropped_synthetic,
         "seen_products": len(ts.seen_products),
         **{f"train_queries_{k}": v for k, v in ts.source_counts().items()},
         **{f"epoch_queries_{k}": v for k, v in ts.train_sampler.epoch_counts(plan.train.seed).items()}}
    )
    tracker.set_tags({"showroom.kind": "fit", "showroom.catalog": catalog.root.name})
    logger.info("epoch 0 (before training): evaluating")
    metrics = {f"val_{k}": v for k, v in model.evaluate(val_ds, verbose=0, return_dict=True).items()}
    metrics.update(probes(0))
    tracker.log_metrics(metrics, step=0)
    log_epoch(0, metrics)


def _train(plan: RunPlan, ts: TrainingSet, model: TripletModel, val_ds: tf.data.Dataset,
           probes: Callable[[int], dict[str, float]], tracker: Tracker, folder: Path, cluster: Cluster) -> list[Triplets]:
    """The epochs still to run, each on freshly sampled triplets, in one ``fit`` call; returns their triplets."""
    tcfg = plan.train
    start = plan.resume["epochs_done"] if plan.resume else 0
    epochs = [ts.train_sampler.sample(tcfg.seed + e) for e in range(start, tcfg.epochs)]
    if epochs:
        # a mixed epoch's triplet count varies a little (pool sizes differ by category): one length for all
        shortest = min(len(t) for t in epochs)
        epochs = [t.subset(np.arange(shortest)) for t in epochs]
        ds = shard_by_data(triplet_dataset(ts.bank, epochs, batch_size=tcfg.batch_size, augment=tcfg.augment, seed=tcfg.seed + start), cluster)
        backup = JobBackup(folder / "backup", cluster.chief) if cluster.multi_worker else ckpt.backup_callback(folder)
        model.fit(
            ds, validation_data=val_ds, initial_epoch=start, epochs=tcfg.epochs, shuffle=False,
            steps_per_epoch=steps_per_epoch(epochs[0], tcfg.batch_size),
            callbacks=[EpochEnd(tracker, probes, len(epochs[0])), backup],
            verbose="auto" if sys.stdout.isatty() else 2,
        )
    return epochs


def _save_outputs(args: argparse.Namespace, plan: RunPlan, ts: TrainingSet, embedder: keras.Model, tracker: Tracker,
                  home: Path, sample: Triplets) -> Path:
    """The embedder (with its preprocessing), config, split, held-out list, triplets and a triplet
    sheet as MLflow artifacts; the serving folder (``index/``) unless ``--no-index``; the local folder."""
    local = home / "models" / tracker.run_id
    model_path = save_embedder(embedder, local / "embedder.keras", plan.preprocessing)
    tracker.log_artifact(model_path, "model")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.json").write_text(json.dumps(plan.state(tracker.run_id), indent=2))
        (tmp / "split.json").write_text(json.dumps(asdict(ts.split), indent=2))
        tracker.log_artifact(tmp / "config.json")
        tracker.log_artifact(tmp / "split.json")
        if plan.holdout:
            tracker.log_artifact(write_scene_list(plan.holdout, tmp / "holdout_scenes.txt", "scenes held out of this run"))
        if plan.triplets:
            tracker.log_artifact(plan.triplets, "triplets")
        if plan.synthetic:
            tracker.log_artifact(plan.synthetic, "synthetic")
        (tmp / "seen_products.txt").write_text("# products of the real training pairs\n" + "".join(f"{p}\n" for p in ts.seen_products))
        tracker.log_artifact(tmp / "seen_products.txt")
        sheet = triplet_sheet(ts.bank, sample, ts.product_ids, seed=plan.train.seed)
        cv2.imwrite(str(tmp / "triplets_sheet.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        tracker.log_artifact(tmp / "triplets_sheet.png")
    if not args.no_index:
        tracker.log_artifact(_build_indexes(args, model_path, plan.catalog, local / "index", home), "index")
    if args.out:
        with atomic_file(args.out) as tmp:
            shutil.copyfile(model_path, tmp)
    return local


def _build_indexes(args: argparse.Namespace, model_path: Path, catalog: Catalog, out: Path, home: Path) -> Path:
    """The serving folder of the catalog with the final model: ``out/{model.keras,products,scenes}``."""
    from engine.index.backends import BackendSpec

    detect = None
    weights = args.detector_weights or os.environ.get(WEIGHTS_ENV)
    if weights and any(p.box is None for p in catalog.pairs):
        detector = YoloDetector(weights, conf=load_preprocessing(model_path).detector_confidence)
        detect = DetectionCache(detector, home / "cache" / "detections").detect
    build_serving_folder(model_path, catalog, out, detect, backend=BackendSpec(), classes=load_category_map().classes,
                         tuning=TuningConfig(target_recall=args.target_recall) if args.target_recall > 0 else None)
    return out


def _auto_mine(args: argparse.Namespace, mcfg: ModelConfig, tcfg: TrainConfig, catalog: Catalog, holdout: set[str], home: Path) -> Path:
    """Mine the catalog's box-less pairs with the detector (once per catalog and settings); the manifest path."""
    weights = args.detector_weights or default_weights()
    key = hashlib.sha256(f"{catalog.fingerprint}|{sorted(holdout)}|{weights}|{mcfg.backbone}|{mcfg.weights}|{mcfg.image_size}|{tcfg.seed}"
                         .encode()).hexdigest()[:12]
    out = home / "mined" / f"{catalog.root.name}-auto-{key}.json"
    if out.is_file():
        logger.info("using the triplets mined earlier for this catalog: %s", out)
        return out
    logger.info("pairs have no boxes: mining them with %s first (--whole-scene-queries to skip)", weights)
    cfg = MiningConfig(crop_padding=tcfg.crop_padding, in_class_negatives=tcfg.in_class_negatives,
                       out_class_negatives=tcfg.out_class_negatives, seed=tcfg.seed)
    embedder = replace(Embedder.imagenet(replace(mcfg, train_backbone="all")), name=f"{mcfg.backbone}:{mcfg.weights}")
    manifest, _ = mine_catalog(catalog, YoloDetector(weights, conf=cfg.detector_confidence), load_category_map(), cfg, embedder=embedder,
                               cache_dir=home / "cache" / "detections", holdout=sorted(holdout))
    save_manifest(manifest, out)
    return out


def _devices() -> str:
    return ",".join(d.device_type for d in tf.config.list_logical_devices())


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

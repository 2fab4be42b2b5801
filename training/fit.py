"""``python -m training.fit``: train the triplet embedder on a catalog, tracked in MLflow.

Without ``--catalog`` it trains on the built-in procedural demo catalog (generated once).
One MLflow run per call: params (whole config, seed, git commit, catalog fingerprint), metrics
per epoch (step 0 = before training), artifacts (embedder ``.keras``, config, split, a sheet of
sample triplets). A checkpoint is written after every epoch; ``--resume RUN_ID`` (or ``last``)
continues a killed run where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from engine.catalog import CatalogError
from engine.config import BACKBONES, DISTRIBUTE, LOSSES, ModelConfig, TrainConfig, flatten, from_dict
from engine.runtime import run_cli

logger = logging.getLogger("training.fit")


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
    g = p.add_argument_group("model")
    g.add_argument("--backbone", choices=BACKBONES, default=m.backbone, help="ImageNet CNN: mobilenet_v2 for CPU; xception or inception_resnet_v2 on a GPU")
    g.add_argument("--weights", default=m.weights, help="backbone init: 'imagenet' (Keras download, or $SHOWROOM_WEIGHTS_DIR mirror), 'none', or a .weights.h5 path")
    g.add_argument("--image-size", type=int, default=m.image_size, help="square input side in pixels (299 suits the big backbones on a GPU)")
    g.add_argument("--alpha", type=float, default=m.alpha, help="MobileNetV2 width multiplier")
    g.add_argument("--embedding-dim", type=int, default=m.embedding_dim, help="D, the embedding size")
    g.add_argument("--no-low-level-branch", action="store_true", help="ablation: drop the shallow conv branch on the downsampled image")
    g.add_argument("--no-l2-normalize", action="store_true", help="do not L2-normalise embeddings")
    g.add_argument("--train-backbone", default=m.train_backbone, help="which backbone layers train: 'all', 'none', or N (the last N layers)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=t.epochs, help="epochs over freshly sampled triplets")
    g.add_argument("--batch-size", type=int, default=t.batch_size, help="triplets per step (global batch under tf.distribute)")
    g.add_argument("--learning-rate", type=float, default=t.learning_rate, help="Adam learning rate")
    g.add_argument("--margin", type=float, default=t.margin, help="triplet margin m")
    g.add_argument("--loss", choices=LOSSES, default=t.loss, help="hinge: mean(max(0, m + d(q,p) - d(q,n))); batch_hard / semi_hard: in-batch mining (TFA semantics)")
    g.add_argument("--in-class-negatives", type=int, default=t.in_class_negatives, help="negatives per positive from the same category, resampled each epoch")
    g.add_argument("--out-class-negatives", type=int, default=t.out_class_negatives, help="negatives per positive from other categories, resampled each epoch")
    g.add_argument("--crop-padding", type=float, default=t.crop_padding, help="padding around a query box, as a fraction of its longer side")
    g.add_argument("--val-fraction", type=float, default=t.val_fraction, help="share of scenes held out for validation")
    g.add_argument("--max-triplets-per-epoch", type=int, default=t.max_triplets_per_epoch, help="cap on triplets per epoch (0 = all)")
    g.add_argument("--no-augment", action="store_true", help="turn off augmentation")
    g.add_argument("--seed", type=int, default=t.seed, help="seed for the split, sampling, augmentation and initialisation")
    g.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPU)")
    g.add_argument("--distribute", choices=DISTRIBUTE, default=t.distribute, help="tf.distribute: 'auto' mirrors over all GPUs when there are several")
    g = p.add_argument_group("run")
    g.add_argument("--run-name", default=None, help="MLflow run name")
    g.add_argument("--experiment", default="showroom", help="MLflow experiment")
    g.add_argument("--resume", default=None, metavar="RUN_ID", help="continue a killed run from its last checkpoint ('last' = most recent); other flags are taken from the run")
    g.add_argument("--out", type=Path, default=None, help="also copy the final embedder .keras here")
    g.add_argument("--no-index", action="store_true", help="do not build the search indexes (products, scene crops) at the end")
    g.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    model = ModelConfig(
        backbone=args.backbone, weights=args.weights, image_size=args.image_size, alpha=args.alpha,
        embedding_dim=args.embedding_dim, low_level_branch=not args.no_low_level_branch,
        l2_normalize=not args.no_l2_normalize, train_backbone=args.train_backbone,
    )
    train = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, margin=args.margin,
        loss=args.loss, in_class_negatives=args.in_class_negatives, out_class_negatives=args.out_class_negatives,
        crop_padding=args.crop_padding, val_fraction=args.val_fraction, max_triplets_per_epoch=args.max_triplets_per_epoch,
        augment=not args.no_augment, seed=args.seed, mixed_precision=args.mixed_precision, distribute=args.distribute,
    )
    return model, train


def _strategy(kind: str):
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored" or (kind == "auto" and len(gpus) > 1):
        strategy = tf.distribute.MirroredStrategy()
        logger.info("MirroredStrategy over %d replicas", strategy.num_replicas_in_sync)
        return strategy
    return tf.distribute.get_strategy()


def _latest_run(home: Path) -> str:
    roots = sorted((home / "checkpoints").glob("*/LATEST"), key=lambda p: p.stat().st_mtime)
    if not roots:
        raise CatalogError(f"--resume last: no checkpoints under {home / 'checkpoints'}")
    return roots[-1].parent.name


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda home: _run(args, home), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace, home: Path) -> int:
    import keras
    import numpy as np

    from engine.catalog import load_catalog
    from engine.embed import ModelError, embed_images, input_size, load_embedder
    from engine.model import TripletModel, build_embedder
    from training import checkpoint as ckpt
    from training.callbacks import EpochEnd, log_epoch
    from training.data import steps_per_epoch, triplet_dataset, triplet_sheet
    from training.dataset import build_training_set, probe_metrics, queries_from_manifest
    from training.manifest import load_manifest
    from training.model_ref import resolve_model
    from training.demo_catalog import DemoSpec, ensure_demo_catalog
    from training.tracking import git_commit, mlflow_run

    resume_state = None
    if args.resume:
        run_id = _latest_run(home) if args.resume == "last" else args.resume
        folder = ckpt.latest_checkpoint(ckpt.checkpoint_root(home, run_id))
        resume_state = ckpt.read_state(folder)
        mcfg = from_dict(ModelConfig, resume_state["model"])
        tcfg = from_dict(TrainConfig, resume_state["train"])
        catalog_dir = Path(resume_state["catalog"])
        triplets_path = Path(resume_state["triplets"]) if resume_state.get("triplets") else None
        holdout = set(resume_state.get("holdout_scenes") or ())
        logger.info("resuming run %s after epoch %d of %d", run_id, resume_state["epochs_done"], tcfg.epochs)
    else:
        mcfg, tcfg = configs_from_args(args)
        triplets_path = args.triplets
        holdout = set()
        if args.holdout_scenes:
            from engine.splits import read_scene_list

            holdout = set(read_scene_list(args.holdout_scenes))
        catalog_dir = args.catalog
        if catalog_dir is None and triplets_path is not None:
            catalog_dir = Path(load_manifest(triplets_path).catalog)
        if catalog_dir is None:
            catalog_dir = ensure_demo_catalog(home, DemoSpec(seed=args.demo_seed))

    init_model = None
    if args.init_from and not resume_state:
        init_model = load_embedder(resolve_model(args.init_from))
        mcfg = replace(mcfg, image_size=input_size(init_model), embedding_dim=int(init_model.output_shape[-1]), weights="none")
        logger.info("initialising from %s (input %d px, D=%d)", args.init_from, mcfg.image_size, mcfg.embedding_dim)

    catalog = load_catalog(catalog_dir)
    if not resume_state and triplets_path is None and not args.whole_scene_queries and any(p.box is None for p in catalog.pairs):
        triplets_path = _auto_mine(args, mcfg, tcfg, catalog, home)
    if resume_state and catalog.fingerprint != resume_state["catalog_fingerprint"]:
        raise CatalogError(
            f"{catalog_dir} changed since run {resume_state['run_id']} started (fingerprint {catalog.fingerprint} "
            f"vs {resume_state['catalog_fingerprint']}); start a new run instead of --resume"
        )
    queries = None
    if triplets_path:
        manifest = load_manifest(triplets_path)
        holdout |= set(manifest.holdout_scenes)
        queries = queries_from_manifest(manifest, catalog)
    if holdout:
        from engine.splits import restrict_scenes

        train_catalog = restrict_scenes(catalog, drop=holdout)
        if queries is not None:
            queries = [q for q in queries if q.scene not in holdout]
        logger.info("holding out %d scenes for evaluation: never trained or validated on", len(holdout))
    else:
        train_catalog = catalog
    ts = build_training_set(train_catalog, tcfg, mcfg.image_size, queries)

    keras.utils.set_random_seed(tcfg.seed)
    if tcfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = _strategy(tcfg.distribute)
    val_trip = ts.val_sampler.sample(tcfg.seed + 10_000)  # fixed validation triplets
    val_ds = triplet_dataset(ts.bank, [val_trip], batch_size=tcfg.batch_size, augment=False, seed=tcfg.seed)

    run_kwargs = {"run_id": resume_state["run_id"]} if resume_state else {"run_name": args.run_name, "experiment": args.experiment}
    with mlflow_run(**run_kwargs) as tracker:
        with strategy.scope():
            build_cfg = replace(mcfg, weights="none") if resume_state else mcfg
            embedder = build_embedder(build_cfg)
            model = TripletModel(embedder, margin=tcfg.margin, loss=tcfg.loss)
            model.compile(optimizer=keras.optimizers.Adam(tcfg.learning_rate))
            if init_model is not None:
                try:
                    embedder.set_weights(init_model.get_weights())
                except ValueError as exc:
                    raise ModelError(
                        f"--init-from {args.init_from} has a different architecture ({exc}); pass the same --backbone, "
                        "--alpha and --no-low-level-branch/--no-l2-normalize as the run that trained it"
                    ) from None
        root = ckpt.checkpoint_root(home, tracker.run_id)
        state = {
            "run_id": tracker.run_id, "model": asdict(mcfg), "train": asdict(tcfg),
            "catalog": str(catalog.root), "catalog_fingerprint": catalog.fingerprint,
            "triplets": str(triplets_path) if triplets_path else None,
            "holdout_scenes": sorted(holdout),
        }

        def embed(images: np.ndarray) -> np.ndarray:
            return embed_images(embedder, images, batch_size=64)

        def probes(step: int) -> dict[str, float]:
            out = probe_metrics(embed, ts, ts.val_queries, "val_", seed=tcfg.seed)
            out.update(probe_metrics(embed, ts, ts.train_queries, "train_", seed=tcfg.seed))
            return out

        if resume_state:
            restore_folder = ckpt.latest_checkpoint(root)
            ckpt.restore_checkpoint(restore_folder, embedder, model.optimizer)
            start = resume_state["epochs_done"]
        else:
            start = 0
            tracker.log_params(
                {**flatten("model", mcfg), **flatten("train", tcfg), "seed": tcfg.seed, "git_commit": git_commit(),
                 "catalog": str(catalog.root), "catalog_fingerprint": catalog.fingerprint,
                 "n_products": len(ts.product_ids), "n_train_queries": len(ts.train_queries),
                 "n_val_queries": len(ts.val_queries), "n_val_triplets": len(val_trip),
                 "whole_scene_queries": ts.whole_scene_queries, "tensorflow_devices": _devices(),
                 "triplets": str(triplets_path or ""), "init_from": args.init_from or "",
                 "holdout_scenes": len(holdout)}
            )
            tracker.set_tags({"showroom.kind": "fit", "showroom.catalog": catalog.root.name})
            logger.info("epoch 0 (before training): evaluating")
            metrics = {f"val_{k}": v for k, v in model.evaluate(val_ds, verbose=0, return_dict=True).items()}
            metrics.update(probes(0))
            tracker.log_metrics(metrics, step=0)
            log_epoch(0, metrics)

        epochs = [ts.train_sampler.sample(tcfg.seed + e) for e in range(start, tcfg.epochs)]
        if epochs:
            ds = triplet_dataset(ts.bank, epochs, batch_size=tcfg.batch_size, augment=tcfg.augment, seed=tcfg.seed + start)
            hook = EpochEnd(tracker, probes, lambda e: ckpt.save_checkpoint(root, e, embedder, model.optimizer, state), len(epochs[0]))
            model.fit(
                ds, validation_data=val_ds, initial_epoch=start, epochs=tcfg.epochs, shuffle=False,
                steps_per_epoch=steps_per_epoch(epochs[0], tcfg.batch_size), callbacks=[hook],
                verbose="auto" if sys.stdout.isatty() else 2,
            )
        sample = epochs[0] if epochs else ts.train_sampler.sample(tcfg.seed)

        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "model").mkdir()
            model_path = tmp / "model" / "embedder.keras"
            embedder.save(model_path)
            tracker.log_artifact(model_path, "model")
            (tmp / "config.json").write_text(json.dumps(state, indent=2))
            (tmp / "split.json").write_text(json.dumps(asdict(ts.split), indent=2))
            tracker.log_artifact(tmp / "config.json")
            tracker.log_artifact(tmp / "split.json")
            if holdout:
                from engine.splits import write_scene_list

                tracker.log_artifact(write_scene_list(holdout, tmp / "holdout_scenes.txt", "scenes held out of this run"))
            if triplets_path:
                tracker.log_artifact(triplets_path, "triplets")
            sheet = triplet_sheet(ts.bank, sample, ts.product_ids, seed=tcfg.seed)
            import cv2

            cv2.imwrite(str(tmp / "triplets_sheet.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
            tracker.log_artifact(tmp / "triplets_sheet.png")
            local = home / "models" / tracker.run_id
            local.mkdir(parents=True, exist_ok=True)
            embedder.save(local / "embedder.keras")
            if not args.no_index:
                index_dir = _build_indexes(args, embedder, local / "embedder.keras", catalog, local / "index")
                tracker.log_artifact(index_dir, "index")
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                embedder.save(args.out)
        final = _final_summary(tracker.run_id)
    print(final)
    print(f"embedder: {local / 'embedder.keras'}  (MLflow artifact model/embedder.keras of run {tracker.run_id})")
    return 0


def _build_indexes(args: argparse.Namespace, embedder, model_path: Path, catalog, out: Path) -> Path:
    """The serving indexes of the catalog with the final model: ``out/{model.keras,products,scenes}``."""
    import shutil

    from engine.indexing import build_catalog_indexes
    from engine.search import model_fingerprint

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, out / "model.keras")
    detector = None
    weights = getattr(args, "detector_weights", None) or os.environ.get("SHOWROOM_DETECTOR_WEIGHTS")
    if weights and any(p.box is None for p in catalog.pairs):
        from detectors.yolo import YoloDetector

        detector = YoloDetector(weights)
    build_catalog_indexes(catalog, embedder, model_fingerprint(out / "model.keras"), out, detector)
    return out


def _auto_mine(args: argparse.Namespace, mcfg: ModelConfig, tcfg: TrainConfig, catalog, home: Path) -> Path:
    """Mine the catalog's box-less pairs with the detector (once per catalog and settings); the manifest path."""
    import hashlib

    from detectors.yolo import default_weights
    from training import mine_triplets

    weights = args.detector_weights or default_weights()
    holdout = args.holdout_scenes.read_text() if args.holdout_scenes else ""
    key = hashlib.sha256(f"{catalog.fingerprint}|{holdout}|{weights}|{mcfg.backbone}|{mcfg.weights}|{mcfg.image_size}|{tcfg.seed}".encode()).hexdigest()[:12]
    out = home / "mined" / f"{catalog.root.name}-auto-{key}.json"
    if out.is_file():
        logger.info("using the triplets mined earlier for this catalog: %s", out)
        return out
    logger.info("pairs have no boxes: mining them with %s first (--whole-scene-queries to skip)", weights)
    rc = mine_triplets.main([
        "--catalog", str(catalog.root), "--detector-weights", weights, "--backbone", mcfg.backbone,
        "--weights", mcfg.weights, "--image-size", str(mcfg.image_size), "--out", str(out), "--seed", str(tcfg.seed),
        "--in-class-negatives", str(tcfg.in_class_negatives), "--out-class-negatives", str(tcfg.out_class_negatives),
        "--crop-padding", str(tcfg.crop_padding), "--no-mlflow",
        *(["--holdout-scenes", str(args.holdout_scenes)] if args.holdout_scenes else []),
    ])
    if rc != 0:
        raise CatalogError(f"mining {catalog.root} failed (see above); pass --triplets FILE or --whole-scene-queries")
    return out


def _devices() -> str:
    import tensorflow as tf

    return ",".join(d.device_type for d in tf.config.list_logical_devices())


def _final_summary(run_id: str) -> str:
    from training.tracking import run_metrics

    hist = run_metrics(run_id)
    lines = [f"run {run_id}"]
    for key in ("val_distance_accuracy", "val_distance_accuracy_top_3", "val_absolute_accuracy", "val_loss"):
        if key in hist and hist[key]:
            first, last = hist[key][0], hist[key][-1]
            lines.append(f"  {key}: epoch {first[0]} = {first[1]:.4f} -> epoch {last[0]} = {last[1]:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

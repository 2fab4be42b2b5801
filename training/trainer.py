"""One training run from a ``RunPlan``: training set -> compiled model -> epochs -> saved model, tracked in MLflow.

``Trainer(plan, cluster, home).run()`` is what ``python -m training.fit`` does after turning its flags
into configs. Its parts come in through the constructor: the tracker (``start_run``) and the index
build at the end (``build_index``, None = no index); the queries come from the registered query
sources (``training.query_sources.SOURCES``), the triplet loss is the ``engine.model.losses`` object
``TrainConfig.loss`` names, passed to ``TripletModel``.
Under several workers every process runs the same ``Trainer``; only the chief logs, writes the
checkpoint state and saves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf

from engine.config import flatten
from engine.data.catalog import Catalog
from engine.data.splits import restrict_products, restrict_scenes, write_scene_list
from engine.files import atomic_file
from engine.model.embedder import ModelError, embed_images, save_embedder
from engine.model.losses import make_triplet_loss
from engine.model.network import TripletModel, build_embedder
from training import checkpoint as ckpt
from training.callbacks import EpochEnd, log_epoch
from training.input_pipeline import steps_per_epoch, triplet_dataset, triplet_sheet
from training.query_sources import SOURCES, QueryContext, QuerySource, gather_queries, without_products
from training.run_plan import RunPlan
from training.strategy import Cluster, JobBackup, NullTracker, shard_by_data
from training.tracking import Tracker, git_commit, mlflow_run
from training.training_set import TrainingSet, build_training_set, probe_metrics
from training.triplets import Triplets

logger = logging.getLogger(__name__)

IndexBuilder = Callable[[Path, Catalog, Path], Path]  # (embedder .keras, catalog, folder to write) -> the serving folder
Probes = Callable[[int], dict[str, float]]  # epoch -> probe metrics


@dataclass(frozen=True)
class RunOptions:
    """How a run is tracked and what it leaves besides MLflow: the run flags of ``python -m training.fit``.

    run_name / experiment: of the MLflow run (a resume continues its own run). out: also copy the
    final embedder ``.keras`` here.
    """

    run_name: str | None = None
    experiment: str = "showroom"
    out: Path | None = None


@dataclass(frozen=True)
class TrainResult:
    """run_id: the MLflow run (a worker's own name on a non-chief worker); folder: the chief's local
    model folder (``embedder.keras``, ``index/``), None on other workers."""

    run_id: str
    folder: Path | None


def training_set(plan: RunPlan, sources: tuple[QuerySource, ...] = SOURCES) -> TrainingSet:
    """Every source's queries without the held-out scenes (neither as photos nor as backgrounds) and
    without the held-out products (no proxy, bank image, query, negative or synthetic view); split,
    image bank, samplers."""
    train_catalog = restrict_scenes(plan.catalog, drop=plan.holdout) if plan.holdout else plan.catalog
    if plan.holdout:
        logger.info("holding out %d scenes for evaluation: never trained or validated on", len(plan.holdout))
    queries = gather_queries(QueryContext(plan.catalog, train_catalog, plan.holdout, plan.inputs), sources)
    if plan.held_products:
        logger.info("holding out %d products (new products): they do not exist for this run", len(plan.held_products))
        train_catalog = restrict_products(train_catalog, plan.held_products)
        queries = without_products(queries, plan.held_products)
    return build_training_set(train_catalog, plan.train, plan.model.image_size, queries)


class Trainer:
    """plan -> training set -> compile -> train -> save, for one process of a run.

    job: a multi-worker job's checkpoint folder (None: the run's own, named by its MLflow run id).
    start_run: opens the chief's tracker (``mlflow_run(run_id=...)`` to resume, else
    ``mlflow_run(run_name=..., experiment=...)``).
    """

    def __init__(self, plan: RunPlan, cluster: Cluster, home: Path, *, options: RunOptions = RunOptions(),
                 job: Path | None = None, build_index: IndexBuilder | None = None,
                 start_run: Callable[..., contextlib.AbstractContextManager[Tracker]] = mlflow_run) -> None:
        replicas = cluster.strategy.num_replicas_in_sync
        if plan.train.batch_size % replicas:
            raise ValueError(f"--batch-size {plan.train.batch_size} (the global batch) must be a multiple of the {replicas} replicas")
        self.plan, self.cluster, self.home, self.options, self.job = plan, cluster, Path(home), options, job
        self.build_index, self.start_run = build_index, start_run

    def run(self) -> TrainResult:
        """The whole run; returns where it went."""
        plan, cluster, tcfg = self.plan, self.cluster, self.plan.train
        ts = training_set(plan)
        keras.utils.set_random_seed(tcfg.seed)
        if tcfg.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        val_trip = ts.val_sampler.sample(tcfg.seed + 10_000)  # fixed validation triplets
        val_ds = shard_by_data(triplet_dataset(ts.bank, [val_trip], batch_size=tcfg.batch_size, augment=False, seed=tcfg.seed), cluster)
        with self._tracking() as tracker:
            embedder, model = self.compile(ts)
            folder = self.job or ckpt.run_folder(self.home, tracker.run_id)
            probes = self._probes(embedder, ts)
            if plan.resume:
                model(next(iter(val_ds)))  # BackupAndRestore restores into a built model
            else:
                if cluster.chief:
                    ckpt.write_run_state(folder, plan.state(tracker.run_id))
                self._log_start(tracker, ts, len(val_trip), model, val_ds, probes)
            epochs = self.train(ts, model, val_ds, probes, tracker, folder)
            sample = epochs[0] if epochs else ts.train_sampler.sample(tcfg.seed)
            if not cluster.chief:  # saved like the chief's (TensorFlow's pattern), to a folder that is then deleted
                with tempfile.TemporaryDirectory(prefix="showroom-worker-") as tmp:
                    save_embedder(embedder, Path(tmp) / "embedder.keras", plan.preprocessing)
                return TrainResult(tracker.run_id, None)
            local = self.save(ts, embedder, tracker, sample)
            ckpt.finish(folder)
        return TrainResult(tracker.run_id, local)

    def _tracking(self) -> contextlib.AbstractContextManager[Tracker]:
        """The chief's MLflow run (the killed one on a resume); a tracker that drops everything on other workers."""
        if not self.cluster.chief:
            return contextlib.nullcontext(NullTracker(f"{self.job.name}-{self.cluster.task}"))
        if self.plan.resume:
            return self.start_run(run_id=self.plan.resume["run_id"])
        return self.start_run(run_name=self.options.run_name, experiment=self.options.experiment)

    def compile(self, ts: TrainingSet) -> tuple[keras.Model, TripletModel]:
        """The embedder (from ``init_from``'s weights when given) and its compiled training wrapper, with
        product (and type) proxies initialised from the embedder's view of each product's first photo."""
        plan, tcfg = self.plan, self.plan.train
        with self.cluster.strategy.scope():
            embedder = build_embedder(plan.model)
            if plan.init_model is not None:
                try:
                    embedder.set_weights(plan.init_model.get_weights())
                except ValueError as exc:
                    raise ModelError(
                        f"--init-from {plan.data.init_from} has a different architecture ({exc}); pass the same --backbone, "
                        "--alpha and --no-low-level-branch/--no-l2-normalize as the run that trained it"
                    ) from None
            proxies = type_index = type_proxies = None
            if tcfg.softmax_weight > 0 or tcfg.type_softmax_weight > 0:
                proxies = _initial_proxies(self._embed_fn(embedder), ts, zeros=plan.resume is not None)  # a resume restores the trained ones
                types = sorted(set(ts.product_types))
                type_index = np.array([types.index(t) for t in ts.product_types], np.int32)
                type_proxies = np.stack([proxies[type_index == i].mean(0) for i in range(len(types))])
            model = TripletModel(embedder, triplet_loss=make_triplet_loss(tcfg.loss, tcfg.margin), triplet_weight=tcfg.triplet_weight,
                                 softmax_weight=tcfg.softmax_weight, temperature=tcfg.temperature, proxy_margin=tcfg.proxy_margin, proxies=proxies,
                                 type_weight=tcfg.type_softmax_weight, product_types=type_index, type_proxies=type_proxies,
                                 one_pass=tcfg.one_pass)
            model.compile(optimizer=keras.optimizers.Adam(tcfg.learning_rate))
        return embedder, model

    def _embed_fn(self, embedder: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 (N, S, S, 3) -> float32 (N, D) with the model being trained. Under several workers
        ``predict`` would gather every worker's copy of the batch, so each worker calls the model itself."""
        if not self.cluster.multi_worker:
            return lambda images: embed_images(embedder, images, batch_size=64)

        def local(images: np.ndarray) -> np.ndarray:
            parts = [np.asarray(embedder(images[i : i + 64].astype(np.float32), training=False)) for i in range(0, len(images), 64)]
            return np.concatenate(parts) if parts else np.zeros((0, int(embedder.output_shape[-1])), np.float32)

        return local

    def _probes(self, embedder: keras.Model, ts: TrainingSet) -> Probes:
        """distance_accuracy and the collapse watch on validation and training queries, for one epoch."""
        embed, seed = self._embed_fn(embedder), self.plan.train.seed

        def probes(step: int) -> dict[str, float]:
            out = probe_metrics(embed, ts, ts.val_queries, "val_", seed=seed)
            out.update(probe_metrics(embed, ts, ts.real_train_queries, "train_", seed=seed))
            return out

        return probes

    def _log_start(self, tracker: Tracker, ts: TrainingSet, n_val_triplets: int, model: TripletModel, val_ds: tf.data.Dataset,
                   probes: Probes) -> None:
        """Params, tags and the step-0 metrics (before training) of a new run."""
        record = getattr(model.embedder, "showroom_backbone", None) or {}
        tracker.log_params({**self._params(ts, n_val_triplets),
                            **{f"model.backbone_{k}": v for k, v in record.items() if k in ("application", "weights_sha256", "sha256_of")}})
        tracker.set_tags({"showroom.kind": "fit", "showroom.catalog": self.plan.catalog.root.name})
        logger.info("epoch 0 (before training): evaluating")
        metrics = {f"val_{k}": v for k, v in model.evaluate(val_ds, verbose=0, return_dict=True).items()}
        metrics.update(probes(0))
        tracker.log_metrics(metrics, step=0)
        log_epoch(0, metrics)

    def _params(self, ts: TrainingSet, n_val_triplets: int) -> dict[str, object]:
        """The run's params: whole configs, seed, commit, catalog, data sizes and the query sources' inputs and counts."""
        plan = self.plan
        return {
            **flatten("model", plan.model), **flatten("train", plan.train), "seed": plan.train.seed, "git_commit": git_commit(),
            "catalog": str(plan.catalog.root), "catalog_fingerprint": plan.catalog.fingerprint,
            "n_products": len(ts.product_ids), "n_train_queries": len(ts.train_queries),
            "n_val_queries": len(ts.val_queries), "n_val_triplets": n_val_triplets,
            "whole_scene_queries": ts.whole_scene_queries, "tensorflow_devices": _devices(),
            **{name: str(path or "") for name, path in plan.data.input_files().items()},
            "init_from": plan.data.init_from, "holdout_scenes": len(plan.holdout), "holdout_products": len(plan.held_products),
            "dropped_synthetic_val_backgrounds": ts.dropped_synthetic, "seen_products": len(ts.seen_products),
            **{f"train_queries_{k}": v for k, v in ts.source_counts().items()},
            **{f"epoch_queries_{k}": v for k, v in ts.train_sampler.epoch_counts(plan.train.seed).items()},
        }

    def train(self, ts: TrainingSet, model: TripletModel, val_ds: tf.data.Dataset, probes: Probes, tracker: Tracker,
              folder: Path) -> list[Triplets]:
        """The epochs still to run, each on freshly sampled triplets, in one ``fit`` call; returns their triplets."""
        tcfg, cluster = self.plan.train, self.cluster
        start = self.plan.resume["epochs_done"] if self.plan.resume else 0
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

    def save(self, ts: TrainingSet, embedder: keras.Model, tracker: Tracker, sample: Triplets) -> Path:
        """The embedder (with its preprocessing) and the run's records as MLflow artifacts; the serving
        folder (``index/``) when there is an index builder; ``options.out``; returns the local folder."""
        local = self.home / "models" / tracker.run_id
        model_path = save_embedder(embedder, local / "embedder.keras", self.plan.preprocessing)
        tracker.log_artifact(model_path, "model")
        with tempfile.TemporaryDirectory() as tmp:
            for path, folder in self._records(ts, sample, Path(tmp), tracker.run_id):
                tracker.log_artifact(path, folder)
        if self.build_index is not None:
            tracker.log_artifact(self.build_index(model_path, self.plan.catalog, local / "index"), "index")
        if self.options.out:
            with atomic_file(self.options.out) as tmp:
                shutil.copyfile(model_path, tmp)
        return local

    def _records(self, ts: TrainingSet, sample: Triplets, tmp: Path, run_id: str) -> list[tuple[Path, str | None]]:
        """(file, artifact folder) of the run's records, written into ``tmp``: config, split, held-out
        scenes, the input files, seen products and a sheet of sample triplets."""
        plan = self.plan
        (tmp / "config.json").write_text(json.dumps(plan.state(run_id), indent=2))
        (tmp / "split.json").write_text(json.dumps(asdict(ts.split), indent=2))
        out: list[tuple[Path, str | None]] = [(tmp / "config.json", None), (tmp / "split.json", None)]
        if plan.holdout:
            out.append((write_scene_list(plan.holdout, tmp / "holdout_scenes.txt", "scenes held out of this run"), None))
        if plan.held_products:
            out.append((write_scene_list(plan.held_products, tmp / "holdout_products.txt", "products held out of this run (new products)"), None))
        out += [(path, name) for name, path in plan.data.input_files().items() if path]
        (tmp / "seen_products.txt").write_text("# products of the real training pairs\n" + "".join(f"{p}\n" for p in ts.seen_products))
        sheet = triplet_sheet(ts.bank, sample, ts.product_ids, seed=plan.train.seed)
        cv2.imwrite(str(tmp / "triplets_sheet.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        return out + [(tmp / "seen_products.txt", None), (tmp / "triplets_sheet.png", None)]


def _initial_proxies(embed: Callable[[np.ndarray], np.ndarray], ts: TrainingSet, zeros: bool) -> np.ndarray:
    """float32 (P, D): each product's first catalog photo embedded by the untrained embedder, in label order."""
    if zeros:
        return np.zeros((len(ts.product_ids), int(embed(ts.bank[:1]).shape[-1])), np.float32)
    logger.info("initialising %d product proxies from their catalog photos", len(ts.product_ids))
    return embed(ts.bank[[ts.first_image(p) for p in ts.product_ids]])


def _devices() -> str:
    return ",".join(d.device_type for d in tf.config.list_logical_devices())

"""Training on several workers: the ``tf.distribute`` strategy of a run, who is the chief, where a
multi-worker job keeps its backup, and a tracker for the workers that do not log.

Multi-worker training follows TensorFlow's documented pattern: every worker runs the same
``python -m training.fit ... --distribute multi_worker`` command with its own ``TF_CONFIG``
(``{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": i}}``);
``MultiWorkerMirroredStrategy`` all-reduces the gradients, ``--batch-size`` is the global batch and
each worker takes its share of every batch (``tf.data`` auto-sharding by data). The chief (a
``chief`` task, else worker 0) logs to MLflow, writes the backup after each epoch and saves the
model; the others write to temporary folders that are deleted. Restarting the same command on
every worker after one was killed restores the last epoch from the chief's backup, as Keras'
``BackupAndRestore`` does on one machine; the backup folder must be on storage every worker reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cluster:
    """This process's place in the training job.

    strategy: the ``tf.distribute`` strategy (the default one on a single device).
    chief: whether this process logs, backs up and saves.
    workers: number of worker processes (1 unless multi-worker).
    task: ``"worker:1"`` style name of this process ('' when single).
    """

    strategy: tf.distribute.Strategy
    chief: bool = True
    workers: int = 1
    task: str = ""

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1 or isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)


def make_cluster(kind: str) -> Cluster:
    """The strategy for ``TrainConfig.distribute``; create it before any other TensorFlow call
    (``MultiWorkerMirroredStrategy`` configures collective ops at start-up)."""
    if kind == "multi_worker":
        config = read_tf_config()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
        jobs = config["cluster"]
        chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in jobs)
        workers = sum(len(jobs.get(name, [])) for name in ("chief", "worker"))
        logger.info("MultiWorkerMirroredStrategy: %s:%d of %d workers, %d replicas in sync%s", task_type, task_id, workers,
                    strategy.num_replicas_in_sync, " (chief)" if chief else "")
        return Cluster(strategy, chief, workers, f"{task_type}:{task_id}")
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored" or (kind == "auto" and len(gpus) > 1):
        strategy = tf.distribute.MirroredStrategy()
        logger.info("MirroredStrategy over %d replicas", strategy.num_replicas_in_sync)
        return Cluster(strategy)
    return Cluster(tf.distribute.get_strategy())


def read_tf_config() -> dict[str, Any]:
    """``TF_CONFIG`` parsed and checked: a cluster of ``chief``/``worker`` addresses and this task."""
    raw = os.environ.get("TF_CONFIG", "")
    fix = ('set TF_CONFIG on every worker, e.g. {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, '
           '"task": {"type": "worker", "index": 0}} (docs/training.md "Training on several machines")')
    if not raw:
        raise ValueError(f"--distribute multi_worker needs TF_CONFIG: {fix}")
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        addresses = cluster.get(task["type"], [])
        if not 0 <= int(task["index"]) < len(addresses):
            raise KeyError("task index")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"TF_CONFIG is not a valid cluster description ({type(exc).__name__}: {exc}); {fix}") from None
    return config


def job_key(argv: Sequence[str]) -> str:
    """The same short key on every worker of one job: the cluster's addresses and the command line.
    Names the job's backup folder, so a restarted job finds its backup without knowing the MLflow run."""
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    blob = json.dumps({"cluster": cluster, "argv": list(argv)}, sort_keys=True)
    return "job-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


class JobBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` for one worker of a job: every worker restores from ``backup_dir`` (the
    chief's), only the chief writes there; the others write to a temporary folder, deleted at the end."""

    def __init__(self, backup_dir: str | Path, chief: bool) -> None:
        super().__init__(str(backup_dir), save_freq="epoch", double_checkpoint=True, delete_checkpoint=chief)
        self._chief = chief
        self._scratch = None if chief else Path(tempfile.mkdtemp(prefix="showroom-worker-backup-"))

    def _save_model(self) -> None:
        if self._chief:
            return super()._save_model()
        read = (self.backup_dir, self._weights_path, self._training_metadata_path, self._prev_weights_path,
                self._prev_training_metadata_path)
        scratch = str(self._scratch)
        self.backup_dir = scratch
        self._weights_path = os.path.join(scratch, "latest.weights.h5")
        self._training_metadata_path = os.path.join(scratch, "training_metadata.json")
        self._prev_weights_path = self._weights_path + ".bkp"
        self._prev_training_metadata_path = self._training_metadata_path + ".bkp"
        try:
            super()._save_model()
        finally:
            (self.backup_dir, self._weights_path, self._training_metadata_path, self._prev_weights_path,
             self._prev_training_metadata_path) = read

    def on_train_end(self, logs=None) -> None:
        super().on_train_end(logs)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


class NullTracker:
    """What a non-chief worker logs to: nothing. ``run_id`` names its temporary outputs."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def artifact_uri(self) -> str:
        return ""


def shard_by_data(dataset: tf.data.Dataset, cluster: Cluster) -> tf.data.Dataset:
    """Under several workers, each takes its share of every (global) batch: sharding by data, since
    the triplets come from memory, not from files."""
    if not cluster.multi_worker:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)

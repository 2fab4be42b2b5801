"""Keras callback run after each training epoch: probes and MLflow metrics (checkpoints: ``training.checkpoint``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import keras

from training.tracking import Tracker

logger = logging.getLogger(__name__)

SUMMARY_KEYS = (
    "loss", "val_loss", "absolute_accuracy", "val_absolute_accuracy", "val_distance_accuracy",
    "val_distance_accuracy_top_3", "train_distance_accuracy", "zero_loss_share", "val_mean_product_distance",
)


def log_epoch(step: int, metrics: dict[str, float]) -> None:
    """One log line with the headline metrics of an epoch (step 0 = before training)."""
    logger.info("epoch %d: %s", step, ", ".join(f"{k}={metrics[k]:.4f}" for k in SUMMARY_KEYS if k in metrics))


class EpochEnd(keras.callbacks.Callback):
    """After epoch e (1-based step e): merge Keras logs with ``probes(e)`` and log them to the tracker.

    triplets_per_epoch: used for the throughput metric ``triplets_per_second``.
    """

    def __init__(
        self,
        tracker: Tracker,
        probes: Callable[[int], dict[str, float]],
        triplets_per_epoch: int,
    ) -> None:
        super().__init__()
        self.tracker, self.probes = tracker, probes
        self.triplets_per_epoch = triplets_per_epoch
        self._t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._t0
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics.update(self.probes(epoch + 1))
        metrics["epoch_seconds"] = seconds
        metrics["triplets_per_second"] = self.triplets_per_epoch / max(seconds, 1e-9)
        metrics["n_triplets"] = self.triplets_per_epoch
        self.tracker.log_metrics(metrics, step=epoch + 1)
        log_epoch(epoch + 1, metrics)

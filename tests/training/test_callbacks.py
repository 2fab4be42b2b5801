"""The epoch-end callback: Keras logs and probes merged, throughput from a known clock, one tracker call per epoch."""

from __future__ import annotations

import logging

from training import callbacks
from training.callbacks import EpochEnd, log_epoch


class RecordingTracker:
    """A tracker that keeps what it is given."""

    run_id = "recording"

    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics, step: int) -> None:
        self.metrics.append((step, dict(metrics)))


def test_epoch_end_logs_keras_logs_probes_and_throughput_at_step_epoch_plus_one(monkeypatch):
    clock = iter([100.0, 102.5, 200.0, 204.0])  # epoch 0 takes 2.5 s, epoch 1 takes 4 s
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    asked: list[int] = []

    def probes(step: int) -> dict[str, float]:
        asked.append(step)
        return {"val_distance_accuracy": 0.25 * step}

    tracker = RecordingTracker()
    cb = EpochEnd(tracker, probes, triplets_per_epoch=100)
    cb.on_epoch_begin(0)
    cb.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.75})
    cb.on_epoch_begin(1)
    cb.on_epoch_end(1, None)  # Keras may pass no logs

    assert asked == [1, 2]
    assert tracker.metrics == [
        (1, {"loss": 0.5, "val_loss": 0.75, "val_distance_accuracy": 0.25, "epoch_seconds": 2.5, "triplets_per_second": 40.0,
             "n_triplets": 100}),
        (2, {"val_distance_accuracy": 0.5, "epoch_seconds": 4.0, "triplets_per_second": 25.0, "n_triplets": 100}),
    ]


def test_a_probe_overrides_a_keras_log_of_the_same_name(monkeypatch):
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    tracker = RecordingTracker()
    cb = EpochEnd(tracker, lambda step: {"loss": 9.0}, triplets_per_epoch=10)
    cb.on_epoch_begin(4)
    cb.on_epoch_end(4, {"loss": 1.0})
    assert tracker.metrics == [(5, {"loss": 9.0, "epoch_seconds": 1.0, "triplets_per_second": 10.0, "n_triplets": 10})]


def test_log_epoch_writes_the_headline_metrics_in_a_fixed_order(caplog):
    with caplog.at_level(logging.INFO, logger="training.callbacks"):
        log_epoch(3, {"val_loss": 0.25, "epoch_seconds": 7.0, "loss": 0.5, "zero_loss_share": 0.125})
    assert caplog.messages == ["epoch 3: loss=0.5000, val_loss=0.2500, zero_loss_share=0.1250"]  # epoch_seconds is not a headline

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="training.callbacks"):
        log_epoch(0, {"epoch_seconds": 1.0})
    assert caplog.messages == ["epoch 0: "]

"""Training the product-group detector end to end on a tiny rooms dataset: recovered from the COCO
.tflite, one epoch, metrics and artifacts in MLflow, an exported .tflite the server opens with the
groups as its classes, and a killed run resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from detectors.category_map import GROUPS_MAP, load_category_map, map_for_detector
from detectors.litert import LiteRTDetector
from detectors.yolo import SAFE_LAST, resume_progress
from engine.runtime import PROJECT_ROOT
from training import fit_detector, synthesize_rooms
from training.tracking import tracking_uri


def test_config_is_checked(capsys):
    with pytest.raises(ValueError, match="multiple of 32"):
        fit_detector.DetectorTrainConfig(imgsz=100)
    with pytest.raises(SystemExit):
        fit_detector.main(["--epochs", "1"])  # neither --data nor --resume
    assert "--data for a new run" in capsys.readouterr().err


def test_resume_without_a_run_says_so(tmp_path: Path):
    assert fit_detector.main(["--resume", "no-such-run"]) == 2


@pytest.mark.slow
def test_fit_detector_from_the_recovered_coco_detector(tiny_catalog: Path, yolo_weights: Path, tmp_path: Path, capsys):
    rooms = tmp_path / "rooms"
    assert synthesize_rooms.main(["--catalog", str(tiny_catalog), "--no-detector", "--train-images", "8", "--val-images", "4",
                                  "--max-side", "128", "--workers", "1", "--out", str(rooms)]) == 0
    out = tmp_path / "groups.tflite"
    argv = ["--data", str(rooms / "data.yaml"), "--init-tflite", str(yolo_weights), "--epochs", "1", "--imgsz", "64", "--batch", "4",
            "--export-imgsz", "96", "--out", str(out), "--run-name", "tiny-detector"]
    assert fit_detector.main(argv) == 0
    printed = capsys.readouterr().out
    assert "val_rooms: mAP@0.5" in printed and f"SHOWROOM_DETECTOR_WEIGHTS={out}" in printed
    mlflow.set_tracking_uri(tracking_uri())
    run = mlflow.search_runs(experiment_names=["showroom"], filter_string="tags.mlflow.runName = 'tiny-detector'", output_format="list")[0]
    assert run.data.params["detector.imgsz"] == "64" and run.data.params["train_images"] == "8"
    assert "metrics/mAP50_B" in run.data.metrics and "train/box_loss" in run.data.metrics and "val_rooms/map50" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "detector")}
    assert {"detector/best.pt", "detector/detector.tflite", "detector/val_rooms.json"} <= artifacts
    # the server's runtime opens it: the product groups are its classes, and the groups map is its map
    detector = LiteRTDetector(out)
    groups = load_category_map(GROUPS_MAP)
    assert detector.class_names == groups.groups and map_for_detector(detector.class_names).source == str(GROUPS_MAP)
    assert fit_detector.main(["--resume", run.info.run_id]) == 2  # finished: nothing to resume


class _Recorder:
    def __init__(self) -> None:
        self.logged: dict[int, dict[str, float]] = {}

    def log_metrics(self, metrics, step: int) -> None:
        self.logged[step] = dict(metrics)


def test_epochs_a_kill_left_unlogged_are_logged_from_results_csv(tmp_path: Path):
    """Killed after epoch 2's checkpoint but before its metrics reached MLflow: the resume logs epoch 2
    from Ultralytics' results.csv, and nothing the run logged already or the checkpoint does not hold."""
    (tmp_path / "results.csv").write_text(
        "epoch,time,train/box_loss,metrics/mAP50(B),val/box_loss,lr/pg0,lr/pg1\n"
        "1,0.2,5.9,0.10,5.3,0.0001,0.0001\n"
        "2,0.6,5.1,0.25,5.2,0.0002,0.0002\n"
        "3,0.3,4.8,0.30,5.0,0.0003,0.0003\n")  # epoch 3's row, written just before a kill cut its checkpoint
    tracker = _Recorder()
    assert fit_detector.backfill_epochs(tracker, tmp_path, logged={1}, done=2) == [2]
    assert tracker.logged == {2: {"train/box_loss": 5.1, "metrics/mAP50_B": 0.25, "val/box_loss": 5.2, "lr": 0.0002}}
    assert fit_detector.backfill_epochs(_Recorder(), tmp_path / "none", logged=set(), done=2) == []  # no results.csv: nothing


@pytest.mark.slow
def test_a_killed_detector_run_resumes_in_the_same_run(tiny_catalog: Path, yolo_weights: Path, tmp_path: Path):
    rooms = tmp_path / "rooms"
    assert synthesize_rooms.main(["--catalog", str(tiny_catalog), "--no-detector", "--train-images", "8", "--val-images", "4",
                                  "--max-side", "128", "--workers", "1", "--out", str(rooms)]) == 0
    home = Path(os.environ["SHOWROOM_HOME"]) / "detectors"
    before = set(home.glob("*")) if home.is_dir() else set()
    cmd = [sys.executable, "-m", "training.fit_detector", "--data", str(rooms / "data.yaml"), "--init-tflite", str(yolo_weights),
           "--epochs", "3", "--imgsz", "64", "--batch", "4", "--export-imgsz", "64", "--run-name", "killed-detector"]
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            # the whole copy of last.pt appears (atomically) once the first epoch is saved
            runs = [p for p in (set(home.glob("*")) - before) if (p / "train" / "weights" / SAFE_LAST).is_file()]
            if runs:
                break
            time.sleep(0.5)
        assert runs, "the run wrote no checkpoint"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run_id = runs[0].name
    done, planned = resume_progress(runs[0] / "train")  # (the kill may have cut a later last.pt short: then the copy is used)
    assert planned == 3 and done >= 1
    assert fit_detector.main(["--resume", run_id, "--epochs", str(done)]) == 2  # a new plan must leave an epoch to train
    # re-planned from 3 to 4 epochs: the run trains on to 4 in the same MLflow run and remembers the plan
    assert fit_detector.main(["--resume", run_id, "--epochs", "4"]) == 0
    mlflow.set_tracking_uri(tracking_uri())
    history = mlflow.MlflowClient().get_metric_history(run_id, "train/box_loss")
    assert sorted({m.step for m in history}) == [1, 2, 3, 4]  # the killed epochs and the resumed ones, in one run
    assert (runs[0] / "detector.tflite").is_file()
    assert json.loads((runs[0] / "state.json").read_text())["config"]["epochs"] == 4
    assert mlflow.get_run(run_id).data.tags["detector.epochs_replanned"] == "3 -> 4"

"""Experiment tracking behind a small interface; the only module that imports ``mlflow``.

Default store: ``sqlite:///<project>/mlruns/mlflow.db`` with artifacts under ``<project>/mlruns/``
(MLflow 3 refuses the plain ``./mlruns`` file store). ``MLFLOW_TRACKING_URI`` overrides it, e.g.
for a team server.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from engine.runtime import PROJECT_ROOT

logger = logging.getLogger(__name__)

EXPERIMENT = "showroom"


class Tracker(Protocol):
    """What training and evaluation need from an experiment tracker."""

    run_id: str

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def artifact_uri(self) -> str: ...


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or the project's sqlite store (its folder is created)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = PROJECT_ROOT / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def git_commit() -> str:
    """The project's git commit (with ``-dirty`` if the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class MlflowTracker:
    """A live MLflow run."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import mlflow

        clean = {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        mlflow.set_tags(dict(tags))

    def artifact_uri(self) -> str:
        import mlflow

        return mlflow.get_artifact_uri()


@contextmanager
def mlflow_run(*, run_name: str | None = None, run_id: str | None = None, experiment: str = EXPERIMENT) -> Iterator[MlflowTracker]:
    """Start (or, with ``run_id``, reopen) one MLflow run; it ends FAILED if the body raises."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if run_id is None:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if uri.startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ:
                location = (PROJECT_ROOT / "mlruns" / "artifacts").as_uri()
            mlflow.create_experiment(experiment, artifact_location=location)
        mlflow.set_experiment(experiment)
    try:
        run = mlflow.start_run(run_id=run_id, run_name=run_name)
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"cannot open MLflow run {run_id or ''} at {uri}: {exc}") from None
    logger.info("MLflow run %s (%s) at %s", run.info.run_id, run.info.run_name, uri)
    try:
        yield MlflowTracker(run.info.run_id)
    except BaseException:
        mlflow.end_run(status="FAILED" if run_id is None else "KILLED")
        raise
    mlflow.end_run(status="FINISHED")


def download_artifact(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Download one artifact of a run into ``dst`` and return its local path."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)))


def run_metrics(run_id: str) -> dict[str, list[tuple[int, float]]]:
    """All metric histories of a run: name → [(step, value)] sorted by step."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    run = client.get_run(run_id)
    out = {}
    for name in run.data.metrics:
        out[name] = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
    return out


def run_params(run_id: str) -> dict[str, str]:
    """The params logged on a run."""
    import mlflow

    return dict(mlflow.MlflowClient(tracking_uri=tracking_uri()).get_run(run_id).data.params)

"""Experiment tracking behind a small interface; the only module that imports ``mlflow``.

Default store: ``sqlite:///<project>/mlruns/mlflow.db`` with artifacts under ``<project>/mlruns/``
(MLflow 3 refuses the plain ``./mlruns`` file store). ``MLFLOW_TRACKING_URI`` overrides it, e.g.
for a team server.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
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


def _mlflow() -> ModuleType:
    """The ``mlflow`` package, imported on first use rather than with this module: it takes seconds to
    import and reads its settings from the environment, which the entry points set first."""
    import mlflow

    return mlflow


def _client() -> Any:
    """An ``mlflow.MlflowClient`` on ``tracking_uri()``."""
    return _mlflow().MlflowClient(tracking_uri=tracking_uri())


def metric_key(text: str) -> str:
    """A string made safe for an MLflow metric name."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text).strip().replace(" ", "_")


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
        _mlflow().log_params({k: ("" if v is None else v) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}
        if clean:
            _mlflow().log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        mlflow = _mlflow()
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        _mlflow().set_tags(dict(tags))

    def artifact_uri(self) -> str:
        return _mlflow().get_artifact_uri()


@contextmanager
def mlflow_run(*, run_name: str | None = None, run_id: str | None = None, experiment: str = EXPERIMENT) -> Iterator[MlflowTracker]:
    """Start (or, with ``run_id``, reopen) one MLflow run; it ends FAILED if the body raises."""
    mlflow = _mlflow()
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if run_id is None:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            # a sqlite store keeps its artifacts beside its database (MLflow's default is ./mlruns of the cwd)
            location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri() if uri.startswith("sqlite:///") else None
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
    mlflow = _mlflow()
    mlflow.set_tracking_uri(tracking_uri())
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)))


def run_metrics(run_id: str) -> dict[str, list[tuple[int, float]]]:
    """All metric histories of a run: name → [(step, value)] sorted by step."""
    client = _client()
    run = client.get_run(run_id)
    out = {}
    for name in run.data.metrics:
        out[name] = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
    return out


def run_params(run_id: str) -> dict[str, str]:
    """The params logged on a run."""
    return dict(_client().get_run(run_id).data.params)


def run_tags(run_id: str) -> dict[str, str]:
    """The tags of a run (``ValueError`` for an unknown run)."""
    mlflow = _mlflow()
    try:
        return dict(_client().get_run(run_id).data.tags)
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"no MLflow run {run_id} at {tracking_uri()} ({exc.message})") from None


def find_runs(kind: str, experiment: str = EXPERIMENT) -> list[dict[str, Any]]:
    """Finished runs tagged ``showroom.kind=kind``: dicts with run_id, params, metrics, tags, start."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`showroom.kind` = '{kind}' and attributes.status = 'FINISHED'",
                              max_results=5000)
    return [_record(r) for r in runs]


def run_record(run_id: str) -> dict[str, Any]:
    """One run as ``find_runs`` gives it (``ValueError`` for an unknown run)."""
    mlflow = _mlflow()
    try:
        return _record(_client().get_run(run_id))
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"no MLflow run {run_id} at {tracking_uri()} ({exc.message})") from None


def _record(run) -> dict[str, Any]:
    return {"run_id": run.info.run_id, "params": dict(run.data.params), "metrics": dict(run.data.metrics),
            "tags": dict(run.data.tags), "start": run.info.start_time, "name": run.info.run_name}


def register_model(run_id: str, name: str, alias: str, tags: Mapping[str, str] | None = None) -> str:
    """Register a fit run's serving folder (artifact ``index/``: model.keras + indexes) or, without
    one, its ``model/`` as a new version of ``name`` and point ``alias`` at it; the version number."""
    mlflow = _mlflow()
    client = _client()
    run = client.get_run(run_id)
    names = {a.path for a in client.list_artifacts(run_id)}
    path = "index" if "index" in names else "model" if "model" in names else None
    if path is None:
        raise ValueError(f"run {run_id} has neither an index/ nor a model/ artifact: is it a training.fit run?")
    try:
        client.create_registered_model(name, description="Showroom embedder (and its serving indexes)")
    except mlflow.exceptions.MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc):
            raise
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/{path}", run_id=run_id, tags=dict(tags or {}))
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def download_registered(uri: str, dst: Path) -> tuple[Path, str, str]:
    """Resolve ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) and download its files into
    ``dst/NAME/VERSION`` (once); (local folder, run id, version)."""
    mlflow = _mlflow()
    spec = uri.removeprefix("models:/")
    client = _client()
    try:
        if "@" in spec:
            name, alias = spec.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, ver = spec.partition("/")
            mv = client.get_model_version(name, ver)
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"{uri}: no such registered model version ({exc.message})") from None
    local = Path(dst) / name / str(mv.version)
    if not local.is_dir():
        mlflow.set_tracking_uri(tracking_uri())
        tmp = local.with_name(f".{mv.version}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(tmp)))
        got.rename(local) if got != tmp else tmp.rename(local)
        shutil.rmtree(tmp, ignore_errors=True)
    return local, mv.run_id or "", str(mv.version)

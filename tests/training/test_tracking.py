"""MLflow tracking: where a sqlite store puts its artifacts, one run read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.tracking import find_runs, mlflow_run, run_record


def test_relative_sqlite_store_keeps_artifacts_beside_its_database(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///store/mlflow.db")  # relative, as in the README's `mlflow ui`
    (tmp_path / "store").mkdir()
    with mlflow_run(run_name="rel", experiment="t-relative") as tracker:
        tracker.set_tags({"showroom.kind": "probe"})
        tracker.log_metrics({"m": 0.5}, step=0)
        uri = tracker.artifact_uri()
    assert uri.startswith((tmp_path / "store" / "artifacts").resolve().as_uri())
    found = find_runs("probe", experiment="t-relative")
    assert len(found) == 1 and run_record(found[0]["run_id"]) == found[0]
    assert found[0]["metrics"] == {"m": 0.5} and found[0]["name"] == "rel"
    with pytest.raises(ValueError, match="no MLflow run"):
        run_record("0" * 32)

"""A team's MLflow: fit, evaluate, promote and serve through ``mlflow server`` over PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from engine.model.embedder import load_embedder
from evaluation import evaluate, holdout, promote
from serving import create_app
from training import fit
from training.model_ref import resolve_model


@pytest.mark.slow
def test_fit_evaluate_promote_and_serve_through_a_team_server(team_tracking, tiny_catalog: Path, tiny_fit: list[str],
                                                              tmp_path: Path, monkeypatch, capsys):
    # the trainer's machine: a fit whose run, metrics and artifacts go to the server
    monkeypatch.setenv("SHOWROOM_HOME", str(tmp_path / "trainer"))
    held = tmp_path / "holdout.txt"
    assert holdout.main(["--catalog", str(tiny_catalog), "--fraction", "0.25", "--seed", "0", "--out", str(held)]) == 0
    assert fit.main(["--catalog", str(tiny_catalog), "--weights", "none", "--epochs", "1", "--run-name", "team-fit",
                     "--holdout-scenes", str(held), "--target-recall", "0", *tiny_fit]) == 0

    client = mlflow.MlflowClient(tracking_uri=team_tracking.uri)
    exp = client.get_experiment_by_name("showroom")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # artifacts go through the server, not to a local path
    (fit_run,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'team-fit'")
    assert fit_run.info.status == "FINISHED" and fit_run.data.tags["showroom.kind"] == "fit"
    assert fit_run.data.params["model.image_size"] == "48" and fit_run.data.params["train.epochs"] == "1"
    assert [m.step for m in client.get_metric_history(fit_run.info.run_id, "val_loss")] == [0, 1]
    assert {"model", "index", "config.json", "split.json"} <= {a.path for a in client.list_artifacts(fit_run.info.run_id)}
    config = client.download_artifacts(fit_run.info.run_id, "config.json", str(tmp_path))
    assert json.loads(Path(config).read_text())  # downloaded through the server ...
    stored = team_tracking.artifacts / exp.experiment_id / fit_run.info.run_id / "artifacts"
    assert (stored / "config.json").is_file() and (stored / "index" / "model.keras").is_file()  # ... from its --artifacts-destination

    # a reviewer's machine (nothing local): evaluate the run and promote it, then serve the champion
    monkeypatch.setenv("SHOWROOM_HOME", str(tmp_path / "reviewer"))
    out = tmp_path / "eval"
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", fit_run.info.run_id, "--scenes", str(held), "--weights", "none",
                          "--baseline", "none", "--tsne-products", "0", "--grid-queries", "2", "--out", str(out),
                          "--run-name", "team-eval"]) == 0
    (ev,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'team-eval'")
    assert ev.data.tags["showroom.kind"] == "evaluate" and ev.data.tags["showroom.model_run"] == fit_run.info.run_id
    assert "s2p_recall_at_10" in ev.data.metrics and ev.data.params["model.image_size"] == "48"
    report = json.loads(Path(client.download_artifacts(ev.info.run_id, "metrics.json", str(tmp_path / "ev"))).read_text())
    assert report == json.loads((out / "metrics.json").read_text())

    capsys.readouterr()
    assert promote.main(["--metric", "s2p_recall_at_10"]) == 0
    assert "models:/showroom@champion -> version 1" in capsys.readouterr().out
    version = client.get_model_version_by_alias("showroom", "champion")
    assert version.version == "1" and version.run_id == fit_run.info.run_id and version.tags["eval_run"] == ev.info.run_id

    ref = resolve_model("models:/showroom@champion")
    assert ref.run_id == fit_run.info.run_id and ref.folder.is_relative_to(tmp_path / "reviewer")  # downloaded from the server
    assert load_embedder(ref.path).output_shape[-1] == 16
    health = create_app({"SHOWROOM_INDEX": "models:/showroom@champion", "TESTING": True}).test_client().get("/healthz").get_json()
    assert health["products"] == 18 and health["preprocessing"]["image_size"] == 48

    # and the runs are in PostgreSQL, not in a local store
    import psycopg2

    with psycopg2.connect(team_tracking.database.replace("postgresql+psycopg2", "postgresql")) as db, db.cursor() as cursor:
        cursor.execute("SELECT name, status FROM runs ORDER BY start_time")
        assert cursor.fetchall() == [("team-fit", "FINISHED"), ("team-eval", "FINISHED")]
        cursor.execute("SELECT name, alias, version FROM registered_model_aliases")
        assert cursor.fetchall() == [("showroom", "champion", 1)]

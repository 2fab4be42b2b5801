"""``python -m training.fit`` end to end on a tiny catalog: MLflow run, metrics, artifacts, resume."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from training import checkpoint
from training import fit
from training.tracking import run_metrics, tracking_uri

TINY = ["--image-size", "48", "--embedding-dim", "16", "--batch-size", "8", "--in-class-negatives", "2",
        "--out-class-negatives", "1", "--val-fraction", "0.25"]


def last_run() -> mlflow.entities.Run:
    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    exp = client.get_experiment_by_name("showroom")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]


def test_fit_logs_run_metrics_and_artifacts(tiny_catalog: Path, tmp_path: Path, capsys):
    out = tmp_path / "embedder.keras"
    assert fit.main(["--catalog", str(tiny_catalog), "--weights", "none", "--epochs", "2", "--run-name", "t-fit", "--out", str(out), *TINY]) == 0
    run = last_run()
    assert run.info.status == "FINISHED" and run.info.run_name == "t-fit"
    params = run.data.params
    assert params["model.image_size"] == "48" and params["train.epochs"] == "2" and params["seed"] == "1234"
    assert len(params["catalog_fingerprint"]) == 16 and params["git_commit"]
    hist = run_metrics(run.info.run_id)
    assert [s for s, _ in hist["val_distance_accuracy"]] == [0, 1, 2]
    assert [s for s, _ in hist["loss"]] == [1, 2]
    for key in ("val_loss", "val_absolute_accuracy", "val_distance_accuracy_top_3", "train_distance_accuracy",
                "zero_loss_share", "val_mean_product_distance", "triplets_per_second"):
        assert key in hist, key
    assert any(k.startswith("val_distance_accuracy/") for k in hist)
    arts = {a.path for a in mlflow.MlflowClient(tracking_uri=tracking_uri()).list_artifacts(run.info.run_id)}
    assert {"model", "config.json", "split.json", "triplets_sheet.png", "index"} <= arts
    from engine.catalog_index import CatalogIndex
    from engine.runtime import state_dir
    from engine.search import model_fingerprint

    folder = state_dir() / "models" / run.info.run_id / "index"
    products = CatalogIndex.load(folder / "products", model_fingerprint=model_fingerprint(folder / "model.keras"))
    from engine.catalog import load_catalog

    assert len(products) == 18 and len(CatalogIndex.load(folder / "scenes")) == len(load_catalog(tiny_catalog).pairs)
    assert out.is_file()
    assert run.info.run_id in capsys.readouterr().out


def test_killed_run_resumes_from_its_checkpoint(tiny_catalog: Path, monkeypatch):
    real_save = checkpoint.save_checkpoint
    calls = []

    def save_then_die(root, epoch, *a, **kw):
        path = real_save(root, epoch, *a, **kw)
        calls.append(epoch)
        if epoch == 1:
            raise KeyboardInterrupt  # the process is killed right after epoch 1's checkpoint
        return path

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit.main(["--catalog", str(tiny_catalog), "--weights", "none", "--epochs", "2", "--run-name", "t-kill", *TINY])
    killed = last_run()
    assert killed.info.status in ("FAILED", "KILLED")
    monkeypatch.setattr(checkpoint, "save_checkpoint", real_save)
    assert fit.main(["--resume", killed.info.run_id]) == 0
    run = mlflow.MlflowClient(tracking_uri=tracking_uri()).get_run(killed.info.run_id)
    assert run.info.status == "FINISHED"
    hist = run_metrics(killed.info.run_id)
    assert [s for s, _ in hist["loss"]] == [1, 2]
    assert [s for s, _ in hist["val_distance_accuracy"]] == [0, 1, 2]


def test_bad_catalog_is_a_clear_error(tmp_path: Path, caplog):
    (tmp_path / "products.csv").write_text("product_id,name\n1,x\n")
    assert fit.main(["--catalog", str(tmp_path), "--weights", "none", *TINY]) == 2
    assert "missing column(s) type, image" in caplog.text


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        fit.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--catalog", "--backbone", "--weights", "--loss", "--resume", "--no-low-level-branch", "--train-backbone"):
        assert flag in text

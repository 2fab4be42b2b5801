"""``python -m training.fit`` end to end on a tiny catalog: MLflow run, metrics, artifacts, resume."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import mlflow
import pytest

from engine.data.catalog import load_catalog
from engine.model.embedder import Embedder, load_preprocessing
from engine.index.catalog_index import CatalogIndex
from engine.runtime import state_dir
from engine.data.splits import read_scene_list
from training import checkpoint, fit
from training.tracking import run_metrics, tracking_uri

@pytest.mark.slow
def test_fit_logs_run_metrics_and_artifacts(trained_run, tiny_catalog: Path, tmp_path: Path):
    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    run = client.get_run(trained_run.run_id)
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
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "config.json", "split.json", "triplets_sheet.png", "index", "holdout_scenes.txt"} <= arts
    # the held-out scenes were neither trained nor validated on
    names = set(read_scene_list(trained_run.holdout))
    split = json.loads(Path(client.download_artifacts(run.info.run_id, "split.json", str(tmp_path))).read_text())
    assert not names & (set(split["train"]) | set(split["val"]))
    assert params["holdout_scenes"] == str(len(names))
    # the serving folder: the model with its preprocessing, and indexes that verify against it
    folder = state_dir() / "models" / run.info.run_id / "index"
    embedder = Embedder.load(folder / "model.keras")
    assert embedder.size == 48 and embedder.preprocessing.crop_padding == 0.0625
    products = CatalogIndex.load(folder / "products", model_fingerprint=embedder.fingerprint)
    assert len(products) == 18 and products.preprocessing["image_size"] == 48
    scenes, catalog = CatalogIndex.load(folder / "scenes"), load_catalog(tiny_catalog)
    labels = [it.label for it in scenes.items]  # a crop per pair's box, then each room's 14 fixed windows
    assert len(labels) - labels.count("window") == len(catalog.pairs) and labels.count("window") == 14 * len(catalog.scenes)
    assert load_preprocessing(trained_run.out).image_size == 48
    assert run.info.run_id in trained_run.stdout
    assert not checkpoint.run_folder(state_dir(), run.info.run_id).exists()  # a finished run leaves no checkpoint


class KillAfterBackup(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at the end of epoch ``epoch`` (1-based), after every other callback ran."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt  # the process is killed right after the epoch's backup


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(tiny_catalog: Path, monkeypatch, last_run, tiny_fit):
    real = checkpoint.backup_callback

    class Dying(keras.callbacks.Callback):
        def __init__(self, folder):
            super().__init__()
            self.backup, self.kill = real(folder), KillAfterBackup(1)

        def set_model(self, model):
            super().set_model(model)
            self.backup.set_model(model)

        def on_train_begin(self, logs=None):
            self.backup.on_train_begin(logs)

        def on_epoch_end(self, epoch, logs=None):
            self.backup.on_epoch_end(epoch, logs)
            self.kill.on_epoch_end(epoch, logs)

    monkeypatch.setattr(checkpoint, "backup_callback", Dying)
    with pytest.raises(KeyboardInterrupt):
        fit.main(["--catalog", str(tiny_catalog), "--weights", "none", "--epochs", "2", "--run-name", "t-kill", "--no-index", *tiny_fit])
    killed = last_run()
    assert killed.info.status in ("FAILED", "KILLED")
    assert checkpoint.epochs_done(checkpoint.run_folder(state_dir(), killed.info.run_id)) == 1
    monkeypatch.setattr(checkpoint, "backup_callback", real)
    assert fit.main(["--resume", "last"]) == 0
    run = mlflow.MlflowClient(tracking_uri=tracking_uri()).get_run(killed.info.run_id)
    assert run.info.status == "FINISHED"
    hist = run_metrics(killed.info.run_id)
    assert [s for s, _ in hist["loss"]] == [1, 2]
    assert [s for s, _ in hist["val_distance_accuracy"]] == [0, 1, 2]


@pytest.mark.slow
def test_the_recipe_runs_unchanged_on_any_keras_application_backbone(tiny_catalog: Path, tmp_path: Path, last_run, tiny_fit):
    """A backbone Showroom does not name, from a weights file (as a GPU user would pass the real
    ImageNet no-top weights): trained, saved and tracked with what it started from."""
    import hashlib

    from engine.model.embedder import backbone_record

    weights = tmp_path / "efficientnetb0_no_top.weights.h5"
    keras.applications.EfficientNetB0(input_shape=(48, 48, 3), include_top=False, weights=None).save_weights(weights)
    assert fit.main(["--catalog", str(tiny_catalog), "--backbone", "EfficientNetB0", "--weights", str(weights), "--epochs", "1",
                     "--train-backbone", "20", "--run-name", "t-effnet", "--out", str(tmp_path / "e.keras"), "--no-index", *tiny_fit]) == 0
    params = last_run().data.params
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert params["model.backbone"] == "EfficientNetB0" and params["model.backbone_weights_sha256"] == digest
    assert backbone_record(tmp_path / "e.keras")["weights_sha256"] == digest
    assert Embedder.load(tmp_path / "e.keras").dim == 16


def test_resume_without_a_checkpoint_is_a_clear_error(caplog):
    assert fit.main(["--resume", "0" * 32]) == 2
    assert "start it again without --resume" in caplog.text


def test_bad_catalog_is_a_clear_error(tmp_path: Path, caplog, tiny_fit):
    (tmp_path / "products.csv").write_text("product_id,name\n1,x\n")
    assert fit.main(["--catalog", str(tmp_path), "--weights", "none", *tiny_fit]) == 2
    assert "missing column(s) type, image" in caplog.text


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        fit.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--catalog", "--backbone", "--weights", "--loss", "--resume", "--no-low-level-branch", "--train-backbone"):
        assert flag in text


def test_unset_flags_take_the_catalog_or_the_demo_default():
    parser = fit.build_parser()
    _, catalog = fit.configs_from_args(parser.parse_args(["--catalog", "x"]))
    _, demo = fit.configs_from_args(parser.parse_args([]), demo=True)
    assert catalog.one_pass and catalog.softmax_weight == 1.0 and catalog.queries_per_epoch == 3000
    assert not demo.one_pass and demo.softmax_weight == 0.0 and demo.mix == ""
    _, forced = fit.configs_from_args(parser.parse_args(["--no-one-pass", "--epochs", "2"]))
    assert not forced.one_pass and forced.epochs == 2


def test_an_unknown_mix_source_is_a_clear_error(tiny_catalog: Path, caplog, tiny_fit):
    assert fit.main(["--catalog", str(tiny_catalog), "--weights", "none", *tiny_fit, "--mix", "real=1,videos=1"]) == 2
    assert "unknown query source(s) ['videos']" in caplog.text

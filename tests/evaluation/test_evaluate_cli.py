"""Held-out scenes, then evaluate → promote → serve the champion through the CLIs, on the shared tiny trained run."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from engine.data.catalog import CatalogError, load_catalog
from engine.model.embedder import load_embedder
from engine.data.splits import holdout_scenes, read_scene_list, restrict_scenes, write_scene_list
from evaluation import evaluate, promote
from serving import create_app
from training.model_ref import resolve_model
from training.tracking import tracking_uri


def test_holdout_is_seeded_stratified_and_round_trips(tiny_catalog: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    a, b = holdout_scenes(catalog, 0.25, seed=1), holdout_scenes(catalog, 0.25, seed=1)
    assert a == b and 0 < len(a) < len(catalog.scenes)
    assert holdout_scenes(catalog, 0.25, seed=2) != a or len(a) == len(catalog.scenes) - 1
    path = write_scene_list(a, tmp_path / "h.txt", "comment line")
    assert read_scene_list(path) == a
    rest = restrict_scenes(catalog, drop=a)
    assert not {p.scene for p in rest.pairs} & set(a) and len(rest.products) == len(catalog.products)
    assert rest.fingerprint == catalog.fingerprint
    with pytest.raises(CatalogError, match="does not have"):
        restrict_scenes(catalog, keep=["no-such-scene"])
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(CatalogError, match="names no scenes"):
        read_scene_list(tmp_path / "empty.txt")


@pytest.mark.slow
def test_evaluate_promote_and_serve_the_champion(trained_run, tiny_catalog: Path, tmp_path: Path, capsys):
    names = set(read_scene_list(trained_run.holdout))
    out = tmp_path / "eval"
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", trained_run.run_id, "--scenes", str(trained_run.holdout),
                          "--weights", "none", "--out", str(out), "--tsne-products", "10", "--grid-queries", "3",
                          "--run-name", "t-eval"]) == 0
    printed = capsys.readouterr().out
    assert "s2p@1" in printed and "imagenet-mobilenet_v2" in printed
    report = json.loads((out / "metrics.json").read_text())
    proto = report["summary"]["protocol"]
    assert proto["scenes"] == len(names) and proto["boxes"] == "pairs.csv"
    assert proto["image_size"] == 48 and proto["crop_padding"] == 0.0625  # the model's own preprocessing
    assert proto["reachable_pairs"] == sum(p.scene in names for p in load_catalog(tiny_catalog).pairs)
    assert report["baseline"]["summary"]["protocol"]["reachable_pairs"] == proto["reachable_pairs"]
    for k in ("1", "5", "10", "20", "50"):
        assert 0.0 <= report["summary"]["scene_to_product"]["recall"][k] <= 1.0
    assert len(report["curves"]["scene_to_product"]) == 100

    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    exp = client.get_experiment_by_name("showroom")
    fit_run = client.get_run(trained_run.run_id)
    ev = client.search_runs([exp.experiment_id], "attributes.run_name = 't-eval'")[0]
    assert ev.data.tags["showroom.kind"] == "evaluate" and ev.data.tags["showroom.model_run"] == trained_run.run_id
    for key in ("model.backbone", "model.image_size", "model.embedding_dim", "train.loss", "catalog_fingerprint", "scenes_sha"):
        assert key in ev.data.params, key
    assert ev.data.params["model.image_size"] == fit_run.data.params["model.image_size"]  # same names as the fit run
    for key in ("s2p_recall_at_1", "s2p_recall_at_10", "p2s_recall_at_10", "distance_accuracy", "baseline/s2p_recall_at_10"):
        assert key in ev.data.metrics, key
    arts = {a.path for a in client.list_artifacts(ev.info.run_id)}
    assert {"metrics.json", "pairs.csv", "recall_at_k.png", "tsne_products.png", "queries_scene_to_product.png",
            "queries_product_to_scene.png", "scenes"} <= arts

    assert promote.main(["--metric", "s2p_recall_at_10"]) == 0
    assert "models:/showroom@champion -> version" in capsys.readouterr().out
    ref = resolve_model("models:/showroom@champion")
    assert ref.run_id == trained_run.run_id and ref.version == "1"
    model = load_embedder(ref.path)
    assert model.input_shape[1] == 48 and model.output_shape[-1] == 16

    app = create_app({"SHOWROOM_INDEX": "models:/showroom@champion", "TESTING": True})
    health = app.test_client().get("/healthz").get_json()
    assert health["products"] == 18 and health["source"].endswith("1")  # registry version 1, downloaded
    assert health["preprocessing"]["image_size"] == 48

    # promoting one chosen evaluation run shows its metric and registers its model run
    assert promote.main(["--eval-run", ev.info.run_id, "--alias", "chosen"]) == 0
    shown = capsys.readouterr().out
    assert f"eval {ev.info.run_id}" in shown and f"{ev.data.metrics['s2p_recall_at_10']:.4f}" in shown
    assert resolve_model("models:/showroom@chosen").run_id == trained_run.run_id


def test_evaluate_errors_are_clear(tiny_catalog: Path, tmp_path: Path, caplog):
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", str(tmp_path / "missing.keras"), "--no-mlflow"]) == 2
    assert "not found" in caplog.text
    bad = tmp_path / "scenes.txt"
    bad.write_text("not-a-scene\n")
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", "imagenet", "--weights", "none", "--scenes", str(bad), "--no-mlflow"]) == 2
    assert "does not have" in caplog.text
    assert promote.main(["--eval-run", "0" * 32]) == 2


def test_compare_file_that_is_not_an_evaluation_is_refused(tiny_catalog: Path, tmp_path: Path, caplog):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"summary": {}}')
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", "imagenet", "--weights", "none", "--compare", str(bad), "--no-mlflow"]) == 2
    assert "not the metrics.json of an evaluation" in caplog.text

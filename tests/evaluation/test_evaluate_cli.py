"""Held-out scenes, then evaluate → promote → serve the champion through the CLIs, on the shared tiny trained run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import pytest

from detectors.category_map import DEFAULT_MAP, load_category_map
from engine.data.catalog import CatalogError, load_catalog
from engine.model.embedder import Embedder, load_embedder
from engine.data.splits import holdout_scenes, read_scene_list, restrict_scenes, write_scene_list
from evaluation import evaluate, holdout, promote
from evaluation.protocol import prepare, score
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
    s2p = report["summary"]["scene_to_product"]["recall"]
    # every held-out pair has its pairs.csv box, so its rank is at most the 18 products: found by k = 20
    assert s2p["20"] == s2p["50"] == 1.0
    # recall@k is the share of pairs.csv rows (one per held-out pair) ranked within k ...
    with (out / "pairs.csv").open() as fh:
        ranks = [int(row["rank"]) for row in csv.DictReader(fh)]
    assert len(ranks) == proto["reachable_pairs"]
    assert s2p == pytest.approx({str(k): sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10, 20, 50)})
    curve = report["curves"]["scene_to_product"]
    assert len(curve) == 100 and [curve[k - 1] for k in (1, 5, 10, 20, 50)] == pytest.approx(list(s2p.values()))
    # ... and the recalls and distance accuracy are the protocol's, computed here on the same scenes with the same model
    embedder = Embedder.load(resolve_model(trained_run.run_id).path)
    held_out = restrict_scenes(load_catalog(tiny_catalog), keep=read_scene_list(trained_run.holdout))
    inputs = prepare(held_out, embedder.preprocessing, detector=None, category_map=load_category_map(DEFAULT_MAP))
    direct = json.loads(json.dumps(score(inputs, embedder).summary))
    for task in ("scene_to_product", "product_to_scene"):
        assert report["summary"][task]["recall"] == direct[task]["recall"], task
    assert report["summary"]["distance_accuracy"] == direct["distance_accuracy"]

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
    # drawn boxes replace a detector's proposals; this catalog's pairs all have their boxes
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", "imagenet", "--weights", "none", "--proposals", str(bad), "--no-mlflow"]) == 2
    assert "has its box in pairs.csv" in caplog.text
    caplog.clear()  # recorded detections would replace the detector as well: nothing to replace here either
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", "imagenet", "--weights", "none", "--detections", str(bad), "--no-mlflow"]) == 2
    assert "--detections" in caplog.text and "has its box in pairs.csv" in caplog.text
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", "imagenet", "--weights", "none", "--proposals", str(bad),
                          "--detections", str(bad), "--no-mlflow"]) == 2
    assert "give one of them" in caplog.text
    assert promote.main(["--eval-run", "0" * 32]) == 2


def test_compare_file_that_is_not_an_evaluation_is_refused(tiny_catalog: Path, tmp_path: Path, caplog):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"summary": {}}')
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", "imagenet", "--weights", "none", "--compare", str(bad), "--no-mlflow"]) == 2
    assert "not the metrics.json of an evaluation" in caplog.text


def test_a_calibrator_fitted_on_development_scenes_is_measured_on_others(trained_run, tiny_catalog: Path, tmp_path: Path, capsys, caplog):
    from engine.calibration import MatchCalibrator
    from engine.data.splits import write_scene_list

    held = set(read_scene_list(trained_run.holdout))
    dev = write_scene_list({p.scene for p in load_catalog(tiny_catalog).pairs} - held, tmp_path / "dev.txt")
    common = ["--catalog", str(tiny_catalog), "--model", trained_run.run_id, "--weights", "none", "--baseline", "none", "--no-mlflow",
              "--tsne-products", "0", "--grid-queries", "0"]
    assert evaluate.main([*common, "--scenes", str(dev), "--fit-calibration", str(tmp_path / "cal.json"), "--out", str(tmp_path / "dev")]) == 0
    cal = MatchCalibrator.load(tmp_path / "cal.json", model_fingerprint=Embedder.load(resolve_model(trained_run.run_id).path).fingerprint)
    assert cal.fitted["pairs"] >= 10 and 0.0 <= cal.threshold <= 1.0 and cal.fitted["scenes"] == str(dev)
    assert evaluate.main([*common, "--scenes", str(trained_run.holdout), "--calibration", str(tmp_path / "cal.json"),
                          "--new-products", str(_new_products_file(tiny_catalog, tmp_path)), "--out", str(tmp_path / "held")]) == 0
    printed = capsys.readouterr().out
    assert "'no close match' on" in printed and "new products (" in printed and "known products (" in printed
    summary = json.loads((tmp_path / "held" / "metrics.json").read_text())["summary"]
    assessed = summary["calibration"]["assessed"]
    assert assessed["pairs"] == len(evaluate_pairs(summary)) and 0.0 <= assessed["auroc"] <= 1.0
    assert sum(r["count"] for r in assessed["reliability"]) == 2 * assessed["pairs"]  # own product + absent top, per pair
    assert (tmp_path / "held" / "reliability.png").is_file()
    assert summary["new_products"]["new"]["pairs"] + summary["new_products"]["known"]["pairs"] == summary["protocol"]["pairs"]
    # a calibrator belongs to its model: the ImageNet features' distances are not the trained model's
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", "imagenet", "--weights", "none", "--image-size", "48", "--no-mlflow",
                          "--scenes", str(trained_run.holdout), "--calibration", str(tmp_path / "cal.json"), "--tsne-products", "0",
                          "--grid-queries", "0", "--out", str(tmp_path / "other")]) == 2
    assert "fitted on model" in caplog.text


def _new_products_file(catalog: Path, tmp_path: Path) -> Path:
    assert holdout.main(["--catalog", str(catalog), "--new-products", "0.3", "--seed", "0", "--out", str(tmp_path / "new.txt")]) == 0
    return tmp_path / "new.txt"


def evaluate_pairs(summary: dict) -> list:
    """The reachable pairs that queried a crop (every tiny-catalog pair has its pairs.csv box)."""
    return [None] * summary["protocol"]["reachable_pairs"]


def test_an_ensemble_is_evaluated_against_its_members_imagenet_features(trained_run, tiny_catalog: Path, tmp_path: Path, capsys):
    """An ensemble (``training.ensemble``) is any model to evaluate: scored on the same crops, its
    baseline the ImageNet features of its members' backbone."""
    import keras

    from engine.config import ModelConfig
    from engine.model.embedder import load_preprocessing, save_embedder
    from engine.model.ensemble import save_ensemble
    from engine.model.network import build_embedder

    keras.utils.set_random_seed(5)
    other = save_embedder(build_embedder(ModelConfig(weights="none", image_size=48, embedding_dim=16)), tmp_path / "other.keras",
                          load_preprocessing(trained_run.out))
    ens, _ = save_ensemble([trained_run.out, other], tmp_path / "both.keras")
    out = tmp_path / "eval"
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", str(ens), "--scenes", str(trained_run.holdout), "--weights", "none",
                          "--no-mlflow", "--tsne-products", "0", "--grid-queries", "0", "--out", str(out)]) == 0
    assert "imagenet-mobilenet_v2-48px" in capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert report["summary"]["protocol"]["image_size"] == 48
    assert report["baseline"]["summary"]["protocol"]["reachable_pairs"] == report["summary"]["protocol"]["reachable_pairs"] > 0


def test_catalog_views_are_blended_without_any_pasted_into_an_evaluated_scene(trained_run, tiny_catalog: Path, tmp_path: Path, capsys,
                                                                              caplog):
    """``--catalog-views``: the views pasted into an evaluated scene would bring that room into the
    index, so they are left out; the model is also scored without the views, pair by pair."""
    from engine.synthesis.composite import PlacementPrior
    from training.synthesis import SynthesisConfig, SyntheticManifest, save_synthetic_manifest, synthesize

    catalog = load_catalog(tiny_catalog)
    evaluated = read_scene_list(trained_run.holdout)
    rooms = [evaluated[0]] + [s.scene for s in catalog.scenes if s.scene not in evaluated][:2]
    views, stats = synthesize(catalog, rooms, PlacementPrior(), load_category_map(), SynthesisConfig(views_per_product=3, seed=2),
                              tmp_path / "views", workers=1)
    manifest = save_synthetic_manifest(SyntheticManifest(str(catalog.root), catalog.fingerprint, views, {}, stats), tmp_path / "views" / "m.json")
    leaked = sum(v.background in evaluated for v in views)
    assert 0 < leaked < len(views)
    out = tmp_path / "eval"
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", str(trained_run.out), "--scenes", str(trained_run.holdout),
                          "--baseline", "none", "--weights", "none", "--catalog-views", str(manifest), "--views-weight", "0.5", "--no-mlflow",
                          "--tsne-products", "0", "--grid-queries", "0", "--out", str(out)]) == 0
    assert "without the catalog's views: s2p recall@10" in capsys.readouterr().out
    assert f"{leaked} of {len(views)} views are pasted into evaluated scenes: left out" in caplog.text
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["catalog_views"]["views"] == len(views) - leaked and summary["catalog_views"]["weight"] == 0.5
    assert set(summary["without_views"]["difference"]) >= {"scene_to_product", "product_to_scene"}
    inside = [v for v in views if v.background in evaluated]  # only views of evaluated rooms: nothing honest to blend
    only = save_synthetic_manifest(SyntheticManifest(str(catalog.root), catalog.fingerprint, inside, {}, stats), tmp_path / "views" / "inside.json")
    for manifest, says in ((only, "every view is pasted into an evaluated scene"), (tmp_path / "none.json", "not found")):
        caplog.clear()
        assert evaluate.main(["--catalog", str(tiny_catalog), "--model", str(trained_run.out), "--scenes", str(trained_run.holdout),
                              "--baseline", "none", "--weights", "none", "--catalog-views", str(manifest), "--no-mlflow"]) == 2
        assert says in caplog.text


def test_a_multiscale_embedder_is_evaluated_on_crops_cut_at_its_largest_size_against_imagenet_at_its_trained_size(
        trained_run, tiny_catalog: Path, tmp_path: Path, capsys):
    """``training.ensemble --scales``: the crops are cut at the largest size; the ImageNet baseline
    reads the same crops at the size the network was trained at, not at the larger one."""
    from engine.model.ensemble import save_multiscale

    ms = save_multiscale(trained_run.out, [48, 64], tmp_path / "ms.keras")
    out = tmp_path / "eval"
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", str(ms), "--scenes", str(trained_run.holdout), "--weights", "none",
                          "--no-mlflow", "--tsne-products", "0", "--grid-queries", "0", "--out", str(out)]) == 0
    assert "imagenet-mobilenet_v2-48px" in capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert report["summary"]["protocol"]["image_size"] == 64 and report["params"]["model.scales"] == "48,64"
    assert report["baseline"]["name"] == "imagenet-mobilenet_v2-48px"
    assert report["baseline"]["summary"]["protocol"]["reachable_pairs"] == report["summary"]["protocol"]["reachable_pairs"] > 0


def test_an_evaluation_keeps_its_boxes_and_replays_them_without_a_detector(tmp_path: Path, caplog):
    """``detections.json`` beside ``metrics.json`` holds every box the call's detector proposed;
    ``--detections`` proposes exactly those again, with no detector at all."""
    import cv2

    from evaluation.detection import DetectionRecorder
    from tests.evaluation.test_protocol import MAP, BoxDetector, _write_catalog

    catalog = _write_catalog(tmp_path / "cat", with_boxes=False)  # no pairs.csv boxes: a detector must propose
    detector = BoxDetector()
    recorder = DetectionRecorder(lambda path, image: detector.detect(image), detector.fingerprint, detector.class_names, 0.05)
    for scene in load_catalog(catalog).scenes:
        recorder.detect(scene.image, cv2.imread(str(scene.image))[..., ::-1])
    (tmp_path / "rec.json").write_text(json.dumps(recorder.record()))
    (tmp_path / "map.yaml").write_text(MAP)  # the fake detector's three COCO classes
    common = ["--catalog", str(catalog), "--category-map", str(tmp_path / "map.yaml"), "--model", "imagenet", "--weights", "none", "--image-size", "48", "--no-mlflow",
              "--tsne-products", "0", "--grid-queries", "0", "--crop-choice", "confidence"]
    assert evaluate.main([*common, "--detections", str(tmp_path / "rec.json"), "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert report["detections"] == {"file": "detections.json", "replayed_from": str(tmp_path / "rec.json"), "photos": 4}
    assert report["summary"]["protocol"]["detector"] == "box-detector:1|replayed>=0.05"
    assert report["summary"]["protocol"]["crops_by_source"] == {"detector": 6}  # s3's chair at 0.1 a fill-in of the default 0.05
    kept = json.loads((tmp_path / "a" / "detections.json").read_text())
    assert kept["detector"] == "box-detector:1" and kept["images"] == recorder.record()["images"]
    # the kept record replays in turn; a catalog photo it does not hold is refused, nothing written
    assert evaluate.main([*common, "--detections", str(tmp_path / "a" / "detections.json"), "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["summary"]["protocol"]["crops_by_source"] == {"detector": 6}
    del kept["images"][sorted(kept["images"])[0]]
    (tmp_path / "cut.json").write_text(json.dumps(kept))
    assert evaluate.main([*common, "--detections", str(tmp_path / "cut.json"), "--out", str(tmp_path / "c")]) == 2
    assert "not in the detections record" in caplog.text and not (tmp_path / "c").exists()

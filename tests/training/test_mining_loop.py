"""The mine → fit → mine hard → fit loop end to end on a small real IKEA subset with the shared detector."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from detectors.category_map import load_category_map
from engine.config import DEFAULT_FILL_CONFIDENCE
from training import fit, mine_hard_negatives, mine_triplets
from training.manifest import load_manifest
from training.tracking import run_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ikea_subset(tmp_path_factory, ikea_catalog: Path) -> Path:
    """8 IKEA scenes with reachable pairs, their products and a few more of the same types."""
    src = ikea_catalog
    cmap = load_category_map()
    products = list(csv.DictReader(open(src / "products.csv")))
    types = {p["product_id"]: p["type"] for p in products}
    pairs = [p for p in csv.DictReader(open(src / "pairs.csv")) if cmap.class_for(types[p["product_id"]])]
    scenes_rows = list(csv.DictReader(open(src / "scenes.csv")))
    chosen = sorted({p["scene"] for p in pairs})[:8]
    pairs = [p for p in pairs if p["scene"] in chosen]
    wanted = {p["product_id"] for p in pairs}
    wanted_types = {types[p] for p in wanted}
    extra = [p["product_id"] for p in products if types[p["product_id"]] in wanted_types and p["product_id"] not in wanted][:30]
    keep = wanted | set(extra)
    dst = tmp_path_factory.mktemp("ikea_subset")
    (dst / "images" / "products").mkdir(parents=True)
    (dst / "images" / "scenes").mkdir(parents=True)
    with open(dst / "products.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(products[0]))
        w.writeheader()
        for p in products:
            if p["product_id"] in keep:
                shutil.copy(src / p["image"], dst / p["image"])
                w.writerow(p)
    with open(dst / "scenes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(scenes_rows[0]))
        w.writeheader()
        for s in scenes_rows:
            if s["scene"] in chosen:
                shutil.copy(src / s["image"], dst / s["image"])
                w.writerow(s)
    with open(dst / "pairs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["product_id", "scene"])
        w.writeheader()
        w.writerows(pairs)
    return dst


def test_mine_fit_mine_hard_fit(ikea_subset: Path, yolo_weights: Path, tmp_path: Path, capsys, last_run):
    mined = tmp_path / "mined.json"
    assert mine_triplets.main(["--catalog", str(ikea_subset), "--detector-weights", str(yolo_weights), "--weights", "none",
                               "--image-size", "64", "--out", str(mined), "--in-class-negatives", "3", "--out-class-negatives", "1"]) == 0
    out = capsys.readouterr().out
    assert "white-background test" in out and "TOTAL" in out and "contact_sheet.png" in out
    manifest = load_manifest(mined)
    detected = [p for p in manifest.positives if p.source == "detector"]
    assert len(detected) >= 5
    assert all(p.box and p.confidence >= DEFAULT_FILL_CONFIDENCE and p.product_id not in p.negatives for p in detected)
    assert manifest.stats["totals"]["pairs"] == manifest.stats["totals"]["kept"] + sum(
        manifest.stats["totals"][r] for r in ("unreachable_type", "no_detection_of_class", "below_confidence", "too_small", "scene_unreadable"))

    tiny = ["--weights", "none", "--image-size", "48", "--embedding-dim", "16", "--batch-size", "8", "--epochs", "1",
            "--in-class-negatives", "2", "--out-class-negatives", "1", "--val-fraction", "0.3", "--queries-per-epoch", "0"]
    assert fit.main(["--triplets", str(mined), "--run-name", "round1", *tiny]) == 0
    round1 = last_run().info.run_id

    hard = tmp_path / "hard.json"
    assert mine_hard_negatives.main(["--model", round1, "--triplets", str(mined), "--out", str(hard), "--pool", "10",
                                     "--negatives-per-positive", "6", "--hard-ratio", "0.5"]) == 0
    line = capsys.readouterr().out
    assert "mean d(q,n) hard" in line
    refreshed = load_manifest(hard)
    assert [p.box for p in refreshed.positives] == [p.box for p in manifest.positives]
    kinds = [k for p in refreshed.positives for k in p.negative_kinds]
    assert "hard" in kinds and "random" in kinds
    stats = refreshed.stats["hard_negatives"]
    assert stats["mean_d_hard"] < stats["mean_d_random"]

    assert fit.main(["--triplets", str(hard), "--init-from", round1, "--run-name", "round2", *tiny]) == 0
    round2 = last_run()
    assert round2.data.params["init_from"] == round1
    assert {"val_loss", "val_absolute_accuracy"} <= set(run_metrics(round2.info.run_id))  # (too few validation queries here for distance_accuracy)


def test_bad_detector_weights_is_a_clear_error(ikea_subset: Path, tmp_path: Path, caplog):
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"junk")
    assert mine_triplets.main(["--catalog", str(ikea_subset), "--detector-weights", str(bad), "--weights", "none",
                               "--out", str(tmp_path / "m.json"), "--no-mlflow"]) == 2
    assert "cannot load detector weights" in caplog.text
    assert not (tmp_path / "m.json").exists()


def test_fit_mines_box_less_pairs_itself(ikea_subset: Path, yolo_weights: Path, last_run):
    assert fit.main(["--catalog", str(ikea_subset), "--detector-weights", str(yolo_weights), "--weights", "none", "--image-size", "48",
                     "--embedding-dim", "16", "--batch-size", "8", "--epochs", "1", "--in-class-negatives", "2",
                     "--out-class-negatives", "1", "--val-fraction", "0.3", "--queries-per-epoch", "0", "--run-name", "auto-mine"]) == 0
    params = last_run().data.params
    assert params["triplets"].endswith(".json") and "-auto-" in params["triplets"]
    assert params["whole_scene_queries"] == "0"
    assert int(params["n_train_queries"]) + int(params["n_val_queries"]) == len(load_manifest(Path(params["triplets"])).positives)

"""Synthetic views of every product: made only in allowed rooms, boxes true, cached with a manifest,
and a tiny end-to-end run that trains on them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest

from detectors.category_map import load_category_map
from engine.data.catalog import load_catalog
from engine.files import file_sha256
from engine.index.views import DEFAULT_WEIGHT as VIEWS_WEIGHT
from engine.runtime import state_dir
from engine.synthesis.composite import PlacementPrior
from engine.data.images import load_image
from engine.data.splits import write_scene_list
from training import fit, synthesize
from training.synthesis import (
    SynthesisConfig,
    SyntheticManifest,
    SyntheticManifestError,
    load_synthetic_manifest,
    save_synthetic_manifest,
    delta_views,
    synthesize as make_views,
    synthetic_views,
)
from training.tracking import run_metrics, tracking_uri


def test_views_of_every_product_in_the_allowed_rooms_only(tiny_catalog: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    rooms = [s.scene for s in catalog.scenes][:5]
    cfg = SynthesisConfig(views_per_product=2, seed=3)
    views, stats = make_views(catalog, rooms, PlacementPrior(), load_category_map(), cfg, tmp_path, workers=1)
    assert stats["products_with_views"] == len(catalog.product_ids) == 18 and stats["views"] == len(views) == 36
    assert {v.background for v in views} <= set(rooms)
    for v in views:
        image = load_image(tmp_path / v.image)
        x1, y1, x2, y2 = v.box
        assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
        assert v.params["visible_share"] >= cfg.composite.min_visible
    again, _ = make_views(catalog, rooms, PlacementPrior(), load_category_map(), cfg, tmp_path / "again", workers=1)
    assert [(v.product_id, v.background, v.box, v.seed) for v in again] == [(v.product_id, v.background, v.box, v.seed) for v in views]
    assert np.array_equal(load_image(tmp_path / views[0].image), load_image(tmp_path / "again" / views[0].image))


def test_manifest_round_trips_and_bad_ones_are_refused(tiny_catalog: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    views, stats = make_views(catalog, [catalog.scenes[0].scene], PlacementPrior(), load_category_map(),
                              SynthesisConfig(views_per_product=1), tmp_path, workers=1)
    manifest = SyntheticManifest(str(catalog.root), catalog.fingerprint, views, {"background_scenes": [catalog.scenes[0].scene]}, stats)
    path = save_synthetic_manifest(manifest, tmp_path / "manifest.json")
    loaded = load_synthetic_manifest(path)
    assert loaded.views == views and loaded.folder == tmp_path and loaded.background_scenes == (catalog.scenes[0].scene,)
    assert loaded.image_path(views[0]).is_file()
    (tmp_path / "bad.json").write_text(json.dumps({"format": "showroom.triplets", "version": 1}))
    with pytest.raises(SyntheticManifestError, match="not a showroom.synthetic"):
        load_synthetic_manifest(tmp_path / "bad.json")
    with pytest.raises(SyntheticManifestError, match="not found"):
        load_synthetic_manifest(tmp_path / "missing.json")


def test_a_manifests_views_to_blend_into_the_index_are_recorded_and_checked(tiny_catalog: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    room = catalog.scenes[0].scene
    views, stats = make_views(catalog, [room], PlacementPrior(), load_category_map(), SynthesisConfig(views_per_product=1), tmp_path, workers=1)
    path = save_synthetic_manifest(SyntheticManifest(str(catalog.root), catalog.fingerprint, views, {}, stats), tmp_path / "manifest.json")
    blend = synthetic_views(path, catalog, 0.25)
    assert [(v.product_id, v.box, v.background) for v in blend.views] == [(v.product_id, tuple(v.box), room) for v in views]
    assert all(v.image.is_file() for v in blend.views)
    assert blend.record() == {"views": 18, "products": 18, "weight": 0.25, "source": str(path), "sha256": file_sha256(path)}
    # a training run's index: its views, less those pasted into its held-out scenes
    plan = SimpleNamespace(data=SimpleNamespace(synthetic=path), catalog=catalog, holdout=frozenset())
    assert len(fit._index_views(plan, 0.25).views) == 18 and fit._index_views(plan, 0.0) is None
    assert fit._index_views(SimpleNamespace(**{**vars(plan), "holdout": frozenset({room})}), 0.25) is None  # every view was in it
    other = SyntheticManifest(str(catalog.root), "another-catalog", views, {}, stats)
    with pytest.raises(SyntheticManifestError, match="synthesize them again"):
        synthetic_views(save_synthetic_manifest(other, tmp_path / "other.json"), catalog)


def test_views_made_for_a_deltas_products_only_and_checked_against_its_rows(tiny_catalog: Path, tmp_path: Path, capsys):
    import shutil

    from engine.data.catalog import ProductImage, check_product_images, read_product_rows

    catalog = load_catalog(tiny_catalog)
    first = catalog.products[0]
    new_photo = shutil.copy(catalog.products[3].image, tmp_path / "new.png")  # a product the catalog does not hold yet
    csv = tmp_path / "new.csv"
    csv.write_text(f"product_id,name,type,image\nnew-1,New one,{first.type},{new_photo}\n")
    out = tmp_path / "views"
    assert synthesize.main(["--catalog", str(tiny_catalog), "--only", str(csv), "--out", str(out), "--no-detector", "--no-mlflow",
                            "--workers", "1", "--views-per-product", "2"]) == 0
    printed = capsys.readouterr().out
    assert "2 synthetic views of 1/1 products" in printed and "skipped {}" in printed  # counted over its products alone
    manifest = load_synthetic_manifest(out / "manifest.json")
    assert {v.product_id for v in manifest.views} == {"new-1"} and len(manifest.views) == 2
    assert manifest.producer["only"] == {"file": str(csv), "products": 1}
    assert all(v.params["photo_sha256"] == file_sha256(new_photo) for v in manifest.views)
    # a lifestyle photo elsewhere in the catalog is skipped by a whole synthesis, not counted against --only's products
    (tmp_path / "two.csv").write_text(csv.read_text() + f"room-1,A room,{first.type},{catalog.scenes[0].image}\n")
    widened, ids = synthesize.with_rows(catalog, tmp_path / "two.csv")
    room = [s.scene for s in catalog.scenes[:2]]
    _, whole = make_views(widened, room, PlacementPrior(), load_category_map(), SynthesisConfig(views_per_product=1), tmp_path / "w", workers=1)
    _, named = make_views(widened, room, PlacementPrior(), load_category_map(), SynthesisConfig(views_per_product=1), tmp_path / "n", workers=1,
                          only=["new-1"])
    assert ids == ["new-1", "room-1"] and whole["skipped"] == {"not_white_background": 1} and named["skipped"] == {}
    assert named["products"] == 1 and named["views"] == 1
    rows = check_product_images(read_product_rows(csv, tiny_catalog)[0], csv)
    got = delta_views(out / "manifest.json", rows + [ProductImage("other", "o", first.type, first.image, 2, sha256=first.sha256)], 0.25)
    assert [v.product_id for v in got.views] == ["new-1", "new-1"] and got.record()["sha256"] == file_sha256(out / "manifest.json")
    with pytest.raises(SyntheticManifestError, match="no view of the 1 product"):
        delta_views(out / "manifest.json", [ProductImage("other", "o", first.type, first.image, 2)])
    with pytest.raises(SyntheticManifestError, match="has type"):
        delta_views(out / "manifest.json", [ProductImage("new-1", "n", "Sofa-not", new_photo, 2, sha256=rows[0].sha256)])
    with pytest.raises(SyntheticManifestError, match="cut out of another photo"):  # the photo was replaced after the views were made
        delta_views(out / "manifest.json", [ProductImage("new-1", "n", first.type, first.image, 2, sha256=first.sha256)])


@pytest.mark.slow
def test_synthesize_then_fit_on_synthetic_views(tiny_catalog: Path, tmp_path: Path, last_run, tiny_fit, capsys):
    catalog = load_catalog(tiny_catalog)
    held = write_scene_list([s.scene for s in catalog.scenes][-3:], tmp_path / "holdout.txt")
    out = tmp_path / "synthetic"
    # the boxes of pairs.csv are known here: they give the placements, no detector needed
    assert synthesize.main(["--catalog", str(tiny_catalog), "--holdout-scenes", str(held), "--out", str(out), "--workers", "1",
                            "--no-detector", "--views-per-product", "1"]) == 0
    assert "18 synthetic views of 18/18 products" in capsys.readouterr().out
    synth_run = last_run()
    assert synth_run.data.tags["showroom.kind"] == "synthesize"
    arts = {a.path for a in mlflow.MlflowClient(tracking_uri=tracking_uri()).list_artifacts(synth_run.info.run_id)}
    assert "contact_sheet.png" in arts
    manifest = load_synthetic_manifest(out / "manifest.json")
    assert not set(manifest.background_scenes) & {s.strip() for s in held.read_text().splitlines() if not s.startswith("#")}

    assert fit.main(["--catalog", str(tiny_catalog), "--synthetic", str(out / "manifest.json"), "--holdout-scenes", str(held),
                     "--weights", "none", "--epochs", "1", "--softmax-weight", "1", "--mix", "real=1,synthetic=1",
                     "--target-recall", "0", "--run-name", "t-synthetic", *tiny_fit]) == 0
    run = last_run()
    # the run's products index blends its synthetic views (none pasted into a held-out scene: there are none here)
    products = json.loads((state_dir() / "models" / run.info.run_id / "index" / "products" / "manifest.json").read_text())
    assert products["embedded_by"]["views"] == {"views": 18, "products": 18, "weight": VIEWS_WEIGHT, "source": str(out / "manifest.json"),
                                                "sha256": file_sha256(out / "manifest.json")}
    params = run.data.params
    assert int(params["train_queries_synthetic"]) + int(params["dropped_synthetic_val_backgrounds"]) == 18
    assert int(params["epoch_queries_real"]) == int(params["epoch_queries_synthetic"]) > 0  # the 1:1 mix
    assert params["train.softmax_weight"] == "1.0"
    hist = run_metrics(run.info.run_id)
    assert "softmax_loss" in hist and "proxy_accuracy" in hist
    arts = {a.path for a in mlflow.MlflowClient(tracking_uri=tracking_uri()).list_artifacts(run.info.run_id)}
    assert {"synthetic", "seen_products.txt"} <= arts

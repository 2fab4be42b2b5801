"""``python -m serving.build_index``: its backend flags make one ``BackendSpec``; killed at any moment it leaves the served index loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.index.backends import BackendSpec
from engine.index.generations import current_generation, resolve_serving_folder
from engine.index.scann_backend import ScannParams
from serving.state import load_from_folder

ROOT = Path(__file__).resolve().parents[2]


def build(model: Path, catalog: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "serving.build_index", "--model", str(model), "--catalog", str(catalog),
                             "--out", str(out), "--no-detector"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_the_backend_flags_make_one_backend_spec():
    from serving.build_index import backend_spec, build_parser

    def spec(*flags: str) -> BackendSpec:
        return backend_spec(build_parser().parse_args(["--model", "m.keras", "--catalog", "c", "--out", "o", *flags]))

    assert spec() == BackendSpec("scann", ScannParams())  # the flags' defaults are the backend's defaults
    assert spec("--brute-force-below", "5", "--leaves", "40", "--leaves-to-search", "6", "--reorder", "90") == BackendSpec(
        "scann", ScannParams(brute_force_below=5, leaves=40, leaves_to_search=6, reorder=90))
    milvus = spec("--backend", "milvus", "--milvus-uri", "m.db", "--milvus-prefix", "cli", "--milvus-index-type", "hnsw",
                  "--milvus-index-params", '{"M": 8}', "--milvus-search-params", '{"ef": 32}', "--leaves", "40")
    s = milvus.settings
    assert milvus.kind == "milvus" and (s.uri, s.index_type, s.index_params, s.search_params) == ("m.db", "HNSW", {"M": 8}, {"ef": 32})
    again = spec("--backend", "milvus", "--milvus-uri", "m.db", "--milvus-prefix", "cli").settings
    assert s.collection.startswith("cli_") and again.collection.startswith("cli_") and s.collection != again.collection  # one per build


def building(out: Path) -> Path | None:
    return next((p for p in out.iterdir() if p.name.startswith(".build-")), None)


# Where to kill: a condition on the serving folder, polled every 2 ms while the build runs.
POINTS = {
    "while importing (1 s in)": lambda out, t: t > 1.0,
    "build folder created": lambda out, t: building(out) is not None,
    "model copied, before any index": lambda out, t: (b := building(out)) is not None and (b / "model.keras").exists(),
    "products index written, scenes not yet": lambda out, t: (b := building(out)) is not None and (b / "products").exists(),
    "scenes index written, before the switch": lambda out, t: (b := building(out)) is not None and (b / "scenes").exists(),
}
LAST = list(POINTS)[-1]


@pytest.mark.slow
def test_killing_a_build_at_any_point_leaves_the_served_index_loadable(index_folder: Path, tiny_catalog: Path, tmp_path: Path):
    out = tmp_path / "serve"
    first = build(index_folder / "model.keras", tiny_catalog, out)
    assert first.wait(timeout=300) == 0, first.stdout.read().decode()
    served = resolve_serving_folder(out)
    fingerprint = load_from_folder(served).model_fingerprint
    report = {}
    for name, condition in POINTS.items():
        proc, t0, seen = build(index_folder / "model.keras", tiny_catalog, out), time.monotonic(), None
        while proc.poll() is None and time.monotonic() - t0 < 300:
            if condition(out, time.monotonic() - t0):
                seen = sorted(p.name for p in building(out).iterdir()) if building(out) else []
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
        if seen is None:
            # only the last point's window (the fsync before the switch) can be too short to hit: then
            # the build switched to its complete generation, which must load like any other
            assert name == LAST, f"{name}: the build finished before the kill point"
            served = resolve_serving_folder(out)
            report[name] = "finished before the kill"
        else:
            report[name] = seen
            # the served index is the complete previous generation, and it loads
            assert current_generation(out) == served.name, name
        loaded = load_from_folder(resolve_serving_folder(out))
        assert loaded.model_fingerprint == fingerprint and len(loaded.engine.products) == 18, name
    # the next build clears the debris and switches in one step
    last = build(index_folder / "model.keras", tiny_catalog, out)
    assert last.wait(timeout=300) == 0
    assert building(out) is None and current_generation(out) != served.name
    assert len(load_from_folder(resolve_serving_folder(out)).engine.products) == 18
    print({k: v for k, v in report.items()})


@pytest.mark.slow
def test_milvus_backend_fills_new_collections_per_build_and_keeps_the_served_ones(index_folder: Path, tiny_catalog: Path, tmp_path: Path,
                                                                                  capsys):
    import json

    from serving.build_index import main

    out = tmp_path / "serve"
    args = ["--model", str(index_folder / "model.keras"), "--catalog", str(tiny_catalog), "--out", str(out), "--no-detector",
            "--backend", "milvus", "--milvus-uri", str(tmp_path / "m.db"), "--milvus-prefix", "cli"]
    assert main(args) == 0
    first = load_from_folder(resolve_serving_folder(out))  # served while the next build fills its own collections
    assert main(args) == 0
    second = load_from_folder(resolve_serving_folder(out))
    assert first.source != second.source and first.engine.products.index.kind == second.engine.products.index.kind == "milvus"
    names = [json.loads((Path(g.source) / ix / "manifest.json").read_text())["index_params"]["collection"]
             for g in (first, second) for ix in ("products", "scenes")]
    assert len(set(names)) == 4 and all(n.startswith("cli_") for n in names) and names[0].endswith("_products")
    q = second.engine.products.vectors[:3]
    assert (first.engine.products.index.search(q, 5).indices == second.engine.products.index.search(q, 5).indices).all()
    assert "products: 18 items, milvus — Milvus backend chosen at build: FLAT index" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(args[:-4])  # --backend milvus without --milvus-uri


def test_add_update_remove_change_the_current_generation_and_refuse_what_does_not_fit(index_folder: Path, tiny_catalog: Path,
                                                                                      tmp_path: Path, capsys, caplog):
    import shutil

    import numpy as np
    from PIL import Image

    from engine.config import ModelConfig, Preprocessing
    from engine.index.catalog_index import CatalogIndex
    from engine.model.network import build_embedder
    from engine.model.embedder import save_embedder
    from serving import build_index

    out = tmp_path / "served"
    assert build_index.main(["--model", str(index_folder / "model.keras"), "--catalog", str(tiny_catalog), "--out", str(out),
                             "--no-detector", "--target-recall", "0"]) == 0
    first = current_generation(out)
    new_photos = tmp_path / "new"  # a shop's new photos, outside the catalog folder: stored by absolute path
    new_photos.mkdir()
    Image.new("RGB", (64, 64), (250, 200, 10)).save(new_photos / "lamp.png")
    shutil.copyfile(next(tiny_catalog.glob("products/*")) if (tiny_catalog / "products").is_dir() else
                    sorted(p for p in tiny_catalog.rglob("*.png"))[0], new_photos / "copy.png")
    (new_photos / "add.csv").write_text("product_id,name,type,image,price\nNEW-1,Yellow lamp,Lamp,lamp.png,19\nNEW-2,Twin,Lamp,copy.png,5\n")
    assert build_index.main(["--out", str(out), "--catalog", str(new_photos), "--add", str(new_photos / "add.csv")]) == 0
    printed = capsys.readouterr().out
    assert "+2 ~0 -0" in printed and "1 photos embedded, 1 reused" in printed  # copy.png's bytes are an indexed photo
    second = current_generation(out)
    assert second != first
    products = CatalogIndex.load(out / second / "products")
    added = {it.product_id: it for it in products.items if it.product_id.startswith("NEW")}
    assert set(added) == {"NEW-1", "NEW-2"} and dict(added["NEW-1"].details) == {"price": "19"}
    assert products.image_path(added["NEW-1"]) == (new_photos / "lamp.png").resolve()
    assert os.path.samefile(out / first / "model.keras", out / second / "model.keras")  # carried over, not copied
    served = load_from_folder(out / second)
    assert served.engine.products.items_of("NEW-1")

    gone = sorted({it.product_id for it in products.items})[0]
    assert build_index.main(["--out", str(out), "--remove", f"NEW-2,{gone}"]) == 0
    third = current_generation(out)
    after = CatalogIndex.load(out / third / "products")
    assert not {"NEW-2", gone} & {it.product_id for it in after.items} and len(after) == len(products) - 1 - len(products.items_of(gone))
    assert after.tuning["updates"][-1]["products_removed"] == 2

    # a calibrator of the generation's model alone makes the next generation; a delta then carries it
    from engine.calibration import FILE, MatchCalibrator
    from engine.model.embedder import model_fingerprint

    MatchCalibrator((1.0, -2.0, 3.0), 0.4, model_fingerprint(out / third / "model.keras")).save(tmp_path / "cal.json")
    assert build_index.main(["--out", str(out), "--calibration", str(tmp_path / "cal.json")]) == 0
    calibrated = current_generation(out)
    assert (out / calibrated / FILE).is_file() and os.path.samefile(out / third / "products" / "manifest.json",
                                                                    out / calibrated / "products" / "manifest.json")
    assert build_index.main(["--out", str(out), "--remove", "NEW-1"]) == 0
    third = current_generation(out)
    assert MatchCalibrator.load(out / third / FILE).threshold == 0.4
    MatchCalibrator((1.0, -2.0, 3.0), 0.4, "another-model").save(tmp_path / "other-cal.json")
    assert build_index.main(["--out", str(out), "--calibration", str(tmp_path / "other-cal.json")]) == 2
    assert current_generation(out) == third

    # refused, and the served generation stays: an unknown id, another model, a damaged current generation
    other = build_embedder(ModelConfig(weights="none", image_size=48, embedding_dim=16))
    save_embedder(other, tmp_path / "other.keras", Preprocessing(image_size=48))
    (new_photos / "broken.jpg").write_bytes(b"not a photo")
    (new_photos / "broken.csv").write_text("product_id,name,type,image\nNEW-9,Broken,Lamp,broken.jpg\n")
    for flags in (["--remove", "NO-SUCH"], ["--model", str(tmp_path / "other.keras"), "--remove", "NEW-1"],
                  ["--catalog", str(new_photos), "--add", str(new_photos / "broken.csv")]):
        assert build_index.main(["--out", str(out), *flags]) == 2
        assert current_generation(out) == third
    products = out / third / "products"  # segmented (its base checked by size) or compacted by the deltas above: either is refused
    vectors = products / "base" / "vectors.npy" if (products / "base").is_dir() else products / "vectors.npy"
    os.truncate(vectors, 100)
    assert build_index.main(["--out", str(out), "--remove", "NEW-1"]) == 2
    assert current_generation(out) == third and building(out) is None
    err = caplog.text
    assert "NO-SUCH" in err and "not the model" in err and "damaged" in err
    assert "broken.csv, line 2: image" in err and "cannot be decoded" in err  # a delta's photos are checked like a catalog's
    assert "fitted on model another" in err


def test_views_go_with_the_products_a_build_embeds_and_a_positive_weight(capsys):
    from serving.build_index import main

    with pytest.raises(SystemExit) as exc:
        main(["--out", "o", "--remove", "A", "--views", "m.json"])  # a removal embeds nothing to blend: refused, not ignored
    assert exc.value.code == 2 and "--views with a delta" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--model", "m.keras", "--catalog", "c", "--out", "o", "--views", "m.json", "--views-weight", "0"])
    assert exc.value.code == 2 and "--views-weight must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--model", "m.keras", "--catalog", "c", "--out", "o", "--views-weight", "0.5"])
    assert exc.value.code == 2 and "--views-weight goes with --views" in capsys.readouterr().err


def test_a_delta_blends_the_views_made_for_its_new_products(index_folder: Path, tiny_catalog: Path, tmp_path: Path, capsys):
    import json
    import shutil

    import numpy as np

    from engine.data.catalog import load_catalog
    from engine.index.catalog_index import CatalogIndex
    from engine.index.serving_folder import photo_images
    from engine.index.views import fuse_views, view_crops
    from engine.model.embedder import Embedder
    from serving import build_index
    from training import synthesize
    from training.synthesis import load_synthetic_manifest

    out = tmp_path / "served"
    assert build_index.main(["--model", str(index_folder / "model.keras"), "--catalog", str(tiny_catalog), "--out", str(out),
                             "--no-detector", "--target-recall", "0"]) == 0
    new = tmp_path / "new"
    new.mkdir()
    source = load_catalog(tiny_catalog).products[4]
    shutil.copyfile(source.image, new / "lamp.png")  # a white-background photo: one synthesis can cut out
    (new / "add.csv").write_text(f"product_id,name,type,image\nNEW-1,New,{source.type},{new / 'lamp.png'}\n")
    assert synthesize.main(["--catalog", str(tiny_catalog), "--only", str(new / "add.csv"), "--out", str(tmp_path / "views"),
                            "--no-detector", "--no-mlflow", "--workers", "1", "--views-per-product", "2"]) == 0
    capsys.readouterr()
    assert build_index.main(["--out", str(out), "--add", str(new / "add.csv"), "--views", str(tmp_path / "views" / "manifest.json")]) == 0
    assert "2 in-room views of 1 products blended (weight 0.25)" in capsys.readouterr().out
    generation = resolve_serving_folder(out)
    products = CatalogIndex.load(generation / "products")
    assert json.loads((generation / "products" / "manifest.json").read_text())["tuning"]["updates"][-1]["views"]["views"] == 2
    embedder = Embedder.load(generation / "model.keras")
    prep = embedder.preprocessing
    manifest = load_synthetic_manifest(tmp_path / "views" / "manifest.json")
    raw = embedder(photo_images([new / "lamp.png"], prep))
    views = embedder(view_crops([_view(manifest, v) for v in manifest.views], prep.image_size, prep.crop_padding))
    (row,) = [i for i, it in enumerate(products.items) if it.product_id == "NEW-1"]
    expected = fuse_views(raw, ["NEW-1"], views, ["NEW-1", "NEW-1"], 0.25)[0]
    np.testing.assert_allclose(np.asarray(products.vectors)[row], expected, atol=1e-5)
    assert float(np.dot(expected, raw[0]) / np.linalg.norm(raw[0]) ** 2) < 0.9999  # moved, not the photo alone


def _view(manifest, v):
    from engine.index.views import ProductView

    return ProductView(v.product_id, manifest.image_path(v), tuple(v.box), v.background)


@pytest.mark.slow
def test_a_build_with_views_serves_each_photo_blended_and_records_them(index_folder: Path, tiny_catalog: Path, tmp_path: Path):
    import json

    import numpy as np

    from detectors.category_map import load_category_map
    from engine.data.catalog import load_catalog
    from engine.files import file_sha256
    from engine.index.catalog_index import CatalogIndex
    from engine.synthesis.composite import PlacementPrior
    from training.synthesis import SynthesisConfig, SyntheticManifest, save_synthetic_manifest, synthesize

    catalog = load_catalog(tiny_catalog)
    views, stats = synthesize(catalog, [s.scene for s in catalog.scenes[:4]], PlacementPrior(), load_category_map(),
                              SynthesisConfig(views_per_product=2, seed=1), tmp_path / "views", workers=1)
    manifest = save_synthetic_manifest(SyntheticManifest(str(catalog.root), catalog.fingerprint, views, {}, stats), tmp_path / "views" / "manifest.json")
    out = tmp_path / "serve"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "serving.build_index", "--model", str(index_folder / "model.keras"), "--catalog", str(tiny_catalog),
                           "--out", str(out), "--no-detector", "--views", str(manifest), "--views-weight", "0.5"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    products = resolve_serving_folder(out) / "products"
    record = json.loads((products / "manifest.json").read_text())["embedded_by"]["views"]
    assert "views" not in json.loads((products.parent / "scenes" / "manifest.json").read_text())["embedded_by"]  # crops are not blended
    assert record == {"views": 36, "products": 18, "weight": 0.5, "source": str(manifest), "sha256": file_sha256(manifest)}
    blended, plain = CatalogIndex.load(products), CatalogIndex.load(index_folder / "products")  # the same model without views
    assert [it.product_id for it in blended.items] == [it.product_id for it in plain.items]
    cos = (np.asarray(blended.vectors) * np.asarray(plain.vectors)).sum(1)
    assert np.allclose(np.linalg.norm(blended.vectors, axis=1), np.linalg.norm(plain.vectors, axis=1), atol=1e-5)  # each photo's norm kept
    assert (cos < 0.9999).all() and (cos > 0.5).all()  # every photo moved toward its views, none replaced by them

"""One index generation for every worker: a reload published by one app is served by the others
before their next request; a build killed midway never reaches them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.index.generations import publish_generation


@pytest.fixture()
def served(index_folder: Path, tmp_path: Path, monkeypatch, copy_of) -> Path:
    out = tmp_path / "serve"
    publish_generation(out, copy_of(index_folder))
    monkeypatch.setenv("SHOWROOM_GENERATION_FILE", str(tmp_path / "run" / "generation.json"))
    return out


def make_app(out: Path):
    from serving import create_app

    return create_app({"SHOWROOM_INDEX": str(out), "TESTING": True,
                       "SHOWROOM_RELOAD_TOKEN": "s3cret", "SHOWROOM_RATE_LIMIT": ""})


def test_two_workers_serve_one_generation_after_a_reload(served: Path, index_folder: Path, copy_of):
    a, b = make_app(served).test_client(), make_app(served).test_client()  # two workers of one server
    first = a.get("/healthz").get_json()
    assert first["generation"] == 1 and b.get("/healthz").get_json()["source"] == first["source"]
    newer = publish_generation(served, copy_of(index_folder))  # a build: nothing changes until a reload
    assert b.get("/healthz").get_json()["generation"] == 1
    r = a.post("/api/reload", headers={"X-Reload-Token": "s3cret"})
    assert r.status_code == 200 and r.get_json()["generation"] == 2 and r.headers["X-Showroom-Generation"] == "2"
    for client in (a, b) * 5:
        h = client.get("/healthz")
        assert h.get_json()["generation"] == 2 and h.get_json()["source"] == str(newer)
        assert h.headers["X-Showroom-Generation"] == "2"


def test_a_worker_that_starts_after_a_reload_joins_the_published_generation(served: Path, index_folder: Path, copy_of):
    a = make_app(served).test_client()
    publish_generation(served, copy_of(index_folder))
    assert a.post("/api/reload", headers={"X-Reload-Token": "s3cret"}).get_json()["generation"] == 2
    late = make_app(served).test_client()  # e.g. gunicorn replaced a worker
    assert late.get("/healthz").get_json() == a.get("/healthz").get_json()


def test_a_refused_reload_publishes_nothing(served: Path, index_folder: Path, copy_of):
    a, b = make_app(served).test_client(), make_app(served).test_client()
    broken = publish_generation(served, copy_of(index_folder))
    (broken / "products" / "items.json").write_text("[]")  # damaged after the build
    r = a.post("/api/reload", headers={"X-Reload-Token": "s3cret"})
    assert r.status_code == 409 and "still serving" in r.get_json()["error"]
    assert {a.get("/healthz").get_json()["generation"], b.get("/healthz").get_json()["generation"]} == {1}


def test_reload_of_a_manifest_without_checksums_is_a_409(served: Path, index_folder: Path, copy_of):
    import json

    a = make_app(served).test_client()
    broken = publish_generation(served, copy_of(index_folder))
    manifest = json.loads((broken / "products" / "manifest.json").read_text())
    del manifest["checksums"]
    (broken / "products" / "manifest.json").write_text(json.dumps(manifest))
    r = a.post("/api/reload", headers={"X-Reload-Token": "s3cret"})
    assert r.status_code == 409 and "checksums" in r.get_json()["error"]


def test_startup_names_the_variable_and_what_is_wrong(tmp_path: Path):
    from serving import create_app

    with pytest.raises(RuntimeError, match=r"SHOWROOM_INDEX=.*nope is not a folder"):
        create_app({"SHOWROOM_INDEX": str(tmp_path / "nope"), "TESTING": True})
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="neither a CURRENT pointer nor a model.keras"):
        create_app({"SHOWROOM_INDEX": str(tmp_path / "empty"), "TESTING": True})


def test_a_truncated_model_is_reported_as_damaged(index_folder: Path, tmp_path: Path):
    from serving import create_app

    broken = tmp_path / "idx"
    shutil.copytree(index_folder, broken)
    data = (broken / "model.keras").read_bytes()
    (broken / "model.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError) as info:
        create_app({"SHOWROOM_INDEX": str(broken), "TESTING": True})
    assert "not found" not in str(info.value) and "damaged" in str(info.value)


def test_images_are_found_under_a_moved_catalog(tiny_catalog: Path, index_folder: Path, tmp_path: Path):
    from serving import create_app

    moved = tmp_path / "elsewhere" / "catalog"
    shutil.copytree(tiny_catalog, moved)
    items = (index_folder / "products" / "items.json").read_text()
    assert str(tiny_catalog) not in items  # stored relative to the catalog root
    app = create_app({"SHOWROOM_INDEX": str(index_folder), "TESTING": True, "SHOWROOM_CATALOG_ROOT": str(moved)})
    c = app.test_client()
    health = c.get("/healthz").get_json()
    assert health["catalog_root"] == str(moved) and health["catalog_images_found"]
    pid = c.get("/api/types").get_json()["types"] and app.extensions["showroom"].current.engine.products.items[0].product_id
    assert c.get(f"/images/products/{pid}").status_code == 200
    gone = create_app({"SHOWROOM_INDEX": str(index_folder), "TESTING": True, "SHOWROOM_CATALOG_ROOT": str(tmp_path / "missing")})
    r = gone.test_client().get(f"/images/products/{pid}")
    assert r.status_code == 404 and "SHOWROOM_CATALOG_ROOT" in r.get_json()["error"]


def test_a_loaded_generation_is_warm_before_it_serves(index_folder: Path):
    from serving.state import load_from_folder

    seen = []

    class Counting:
        class_names = ("chair",)
        fingerprint = "counting:1"

        def detect(self, image):
            seen.append(image.shape)
            return []

    loaded = load_from_folder(index_folder, Counting())
    assert seen == [(480, 640, 3)]  # the detector ran once, on the blank photo
    model = loaded.engine.embedder.model
    assert model.predict_function is not None  # the embedder's graph function is traced already


def test_the_app_limits_blas_to_one_thread(app):
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert blas and all(i["num_threads"] == 1 for i in blas)

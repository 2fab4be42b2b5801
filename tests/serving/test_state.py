"""One index generation for every worker: a reload published by one app is served by the others
before their next request; a build killed midway never reaches them."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

import pytest

from engine.index.generations import publish_generation

JPEG = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))[1].tobytes()


def make_app(out: Path):
    from serving import create_app

    return create_app({"SHOWROOM_INDEX": str(out), "TESTING": True,
                       "SHOWROOM_RELOAD_TOKEN": "s3cret", "SHOWROOM_RATE_LIMIT": ""})


def caught_up(client, generation: int, timeout: float = 120.0) -> dict:
    """``/healthz`` of ``client`` once it answers ``generation``; every answer before is the old one, none fails."""
    deadline = time.monotonic() + timeout
    while True:
        h = client.get("/healthz")
        assert h.status_code == 200 and h.get_json()["generation"] in (generation - 1, generation)
        if h.get_json()["generation"] == generation or time.monotonic() > deadline:
            return h.get_json()
        time.sleep(0.05)


def test_two_workers_serve_one_generation_after_a_reload(served: Path, index_folder: Path, copy_of):
    a, b = make_app(served).test_client(), make_app(served).test_client()  # two workers of one server
    first = a.get("/healthz").get_json()
    assert first["generation"] == 1 and b.get("/healthz").get_json()["source"] == first["source"]
    newer = publish_generation(served, copy_of(index_folder))  # a build: nothing changes until a reload
    assert b.get("/healthz").get_json()["generation"] == 1
    r = a.post("/api/reload", headers={"X-Reload-Token": "s3cret"})
    assert r.status_code == 200 and r.get_json()["generation"] == 2 and r.headers["X-Showroom-Generation"] == "2"
    assert caught_up(b, 2)["source"] == str(newer)
    for client in (a, b) * 5:
        h = client.get("/healthz")
        assert h.get_json()["generation"] == 2 and h.get_json()["source"] == str(newer)
        assert h.headers["X-Showroom-Generation"] == "2"


def test_a_worker_loads_a_published_generation_in_the_background(served: Path, index_folder: Path, copy_of, monkeypatch):
    a, b = make_app(served), make_app(served)
    state = b.extensions["showroom"]
    publish_generation(served, copy_of(index_folder))
    assert a.test_client().post("/api/reload", headers={"X-Reload-Token": "s3cret"}).get_json()["generation"] == 2
    # b's next request is answered at once by generation 1 while generation 2 loads beside it
    h = b.test_client().get("/healthz")
    assert h.status_code == 200 and h.get_json()["generation"] == 1 and state.loading
    deadline = time.monotonic() + 120
    while state.served.generation != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.served.generation == 2 and not state.loading
    # an idle worker follows without any request: its watcher notices the record
    c = make_app(served)
    publish_generation(served, copy_of(index_folder))
    assert a.test_client().post("/api/reload", headers={"X-Reload-Token": "s3cret"}).get_json()["generation"] == 3
    idle = c.extensions["showroom"]
    deadline = time.monotonic() + 120
    while idle.served.generation != 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert idle.served.generation == 3


def test_a_worker_that_starts_after_a_reload_joins_the_published_generation(served: Path, index_folder: Path, copy_of):
    a = make_app(served).test_client()
    publish_generation(served, copy_of(index_folder))
    assert a.post("/api/reload", headers={"X-Reload-Token": "s3cret"}).get_json()["generation"] == 2
    late = make_app(served).test_client()  # e.g. gunicorn replaced a worker
    assert late.get("/healthz").get_json() | {"pid": 0} == a.get("/healthz").get_json() | {"pid": 0}


def test_a_worker_restarted_on_a_damaged_generation_serves_the_newest_that_loads(served: Path, index_folder: Path, copy_of):
    older = Path(served / (served / "CURRENT").read_text().strip())
    newer = publish_generation(served, copy_of(index_folder))
    a = make_app(served).test_client()
    assert a.get("/healthz").get_json()["source"] == str(newer)
    with open(newer / "products" / "vectors.npy", "r+b") as fh:  # damaged under the running server
        fh.truncate(100)
    assert a.post("/api/reload", headers={"X-Reload-Token": "s3cret"}).status_code == 409  # refused: a keeps serving
    restarted = make_app(served)  # gunicorn replaced a killed worker: it must come up, on the older generation
    b = restarted.test_client()
    h = b.get("/healthz").get_json()
    assert h["status"] == "degraded" and h["source"] == str(older) and "does not load" in h["degraded"]
    assert str(newer) in h["degraded"] and a.get("/healthz").get_json()["status"] == "ok"
    assert "showroom_degraded 1.0" in b.get("/metrics").get_data(as_text=True)
    assert b.post("/api/search", data={"image": (io.BytesIO(JPEG), "p.jpg")}, content_type="multipart/form-data").status_code == 200
    # the next good generation published by a reload is followed, and the worker is whole again
    publish_generation(served, copy_of(index_folder))
    assert a.post("/api/reload", headers={"X-Reload-Token": "s3cret"}).get_json()["generation"] == 2
    h = caught_up(b, 2)
    assert h["status"] == "ok" and h["degraded"] is None
    assert "showroom_degraded 0.0" in b.get("/metrics").get_data(as_text=True)


def test_a_first_start_on_a_damaged_current_serves_the_newest_intact_generation(served: Path, index_folder: Path, copy_of,
                                                                              tmp_path: Path, monkeypatch):
    import serving.app
    from serving import create_app

    older = Path(served / (served / "CURRENT").read_text().strip())
    newer = publish_generation(served, copy_of(index_folder))
    (newer / "products" / "items.json").write_text("[]")
    h = make_app(served).test_client().get("/healthz").get_json()
    assert h["status"] == "degraded" and h["source"] == str(older) and str(newer) in h["degraded"]
    (older / "products" / "items.json").write_text("[]")
    # a worker restarted while its siblings serve from memory: it exits to be started again (gunicorn restarts
    # it), it does not fail to boot (which would stop the whole server)
    monkeypatch.setattr(serving.app, "RESTART_PAUSE", 0.0)
    with pytest.raises(SystemExit) as exited:
        make_app(served)
    assert exited.value.code == 1
    # a server's first worker when nothing loads at all: a clear refusal, naming every generation tried
    monkeypatch.setenv("SHOWROOM_GENERATION_FILE", str(tmp_path / "another-server.json"))
    with pytest.raises(RuntimeError, match="items") as info:
        create_app({"SHOWROOM_INDEX": str(served), "TESTING": True})
    assert str(newer) in str(info.value) and str(older) in str(info.value)


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


def test_a_reload_after_a_delta_reuses_the_served_base_and_answers_without_the_removed(served: Path):
    from engine.index.segments import SegmentedIndex
    from serving import build_index

    app = make_app(served)
    client = app.test_client()
    before = app.extensions["showroom"].served.engine.products
    before_scenes = app.extensions["showroom"].served.engine.scenes
    gone = before.items[0].product_id
    assert build_index.main(["--out", str(served), "--remove", gone]) == 0  # a segmented generation over the served index
    r = client.post("/api/reload", headers={"X-Reload-Token": "s3cret"})
    assert r.status_code == 200 and r.get_json()["products"] == len(before) - len(before.items_of(gone))
    after = app.extensions["showroom"].served.engine.products
    assert isinstance(after.index, SegmentedIndex) and after.index.base is before.index  # from memory, not read again
    scenes = [app.extensions["showroom"].served.engine.scenes, before_scenes]
    assert scenes[0] is scenes[1]  # carried over by the delta: the very same index
    assert not after.items_of(gone) and client.get(f"/api/products/{gone}").status_code == 404

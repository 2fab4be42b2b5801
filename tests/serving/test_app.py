"""Every endpoint and error case through app.test_client()."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.data.catalog import load_catalog
from engine.data.detection import Detection
from tests.serving.conftest import BoxDetector


def jpeg(h: int = 120, w: int = 160, seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def upload(client, url, data: bytes | None = None, **form):
    payload = dict(form)
    if data is not None:
        payload["image"] = (io.BytesIO(data), "photo.jpg")
    return client.post(url, data=payload, content_type="multipart/form-data")


def test_healthz(client):
    for url in ("/healthz", "/api/healthz"):
        r = client.get(url)
        assert r.status_code == 200
        body = r.get_json()
        assert body["status"] == "ok" and body["products"] == 18 and body["scene_crops"] > 0
        assert len(body["model"]) == 12 and body["index_kind"] == "brute_force"
        assert body["pid"] > 0 and body["source"] and body["degraded"] is None  # a loopback caller sees the details


def test_healthz_tells_a_remote_caller_only_that_it_is_alive(client):
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/healthz", environ_base=remote).get_json() == {"status": "ok", "generation": 1}
    assert client.get("/api/healthz", environ_base=remote, headers={"X-Reload-Token": "wrong"}).get_json() == {"status": "ok", "generation": 1}
    detailed = client.get("/healthz", environ_base=remote, headers={"X-Reload-Token": "s3cret"}).get_json()
    assert detailed["products"] == 18 and "source" in detailed and "pid" in detailed


def test_detect(client):
    r = upload(client, "/api/detect", jpeg())
    assert r.status_code == 200
    body = r.get_json()
    assert body["width"] == 160 and body["height"] == 120
    assert body["detections"][0] == {"box": [40, 30, 120, 90], "label": "chair", "confidence": 0.9}
    assert set(body["timings_ms"]) == {"decode", "detect_wait", "detect"}


def app_with_setting(index_folder: Path, monkeypatch, name: str, bad: str, refusal: str, good: str):
    """The app served with environment setting ``name`` = ``good``, after checking that ``bad`` stops
    ``create_app`` with a setup error matching ``refusal``."""
    from serving import create_app
    from serving.app import ServingSetupError

    config = {"SHOWROOM_INDEX": str(index_folder), "SHOWROOM_DETECTOR": BoxDetector(), "TESTING": True, "SHOWROOM_RATE_LIMIT": ""}
    monkeypatch.setenv(name, bad)
    with pytest.raises(ServingSetupError, match=refusal):
        create_app(config)
    monkeypatch.setenv(name, good)
    return create_app(config)


def test_with_the_hub_correction_results_come_in_hub_score_order(index_folder: Path, tiny_catalog: Path, monkeypatch):
    app = app_with_setting(index_folder, monkeypatch, "SHOWROOM_HUB_BETA", "a lot", "SHOWROOM_HUB_BETA must be a number", "0.5")
    engine = app.extensions["showroom"].served.engine
    assert engine.hubness is not None and engine.hubness.beta == 0.5  # measured on the served scenes index
    assert set(engine.hubness.density) == {it.product_id for it in engine.products.items}
    scene = load_catalog(tiny_catalog).scenes[0]
    body = upload(app.test_client(), "/api/search", scene.image.read_bytes(), box="10,10,100,100", k="5").get_json()
    scores = [x["hub_score"] for x in body["results"]]
    assert len(scores) == 5 and scores == sorted(scores)
    for x in body["results"]:
        assert x["hub_score"] == pytest.approx(x["distance"] - 0.5 * engine.hubness.density[x["product_id"]], abs=2e-5)


def test_search_with_box_and_timings(client, tiny_catalog: Path):
    scene = load_catalog(tiny_catalog).scenes[0]
    r = upload(client, "/api/search", scene.image.read_bytes(), box="10,10,100,100", k="5")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["box"] == [10, 10, 100, 100] and len(body["results"]) == 5
    d = [x["distance"] for x in body["results"]]
    assert d == sorted(d)
    first = body["results"][0]
    assert first["image_url"].startswith("/images/products/") and first["product_url"] == f"/products/{first['product_id']}"
    assert {"decode", "embed", "search", "total"} <= set(body["timings_ms"])


def test_search_without_box_uses_the_most_confident_detection(client):
    body = upload(client, "/api/search", jpeg()).get_json()
    assert body["box"] == [40, 30, 120, 90] and body["detections"]
    assert "detect" in body["timings_ms"]


def test_type_filter(client):
    body = upload(client, "/api/search", jpeg(), box="0,0,50,50", types="Chair|Lamp", k="20").get_json()
    assert body["results"] and {r["type"] for r in body["results"]} <= {"Chair", "Lamp"}
    assert len(body["results"]) == 6  # 3 chairs + 3 lamps in the tiny catalog
    r = upload(client, "/api/search", jpeg(), types="Spaceship")
    assert r.status_code == 400 and "unknown type" in r.get_json()["error"]


@pytest.mark.parametrize("data,form,status,message", [
    (None, {}, 400, "no file"),
    (b"", {}, 400, "empty file"),
    (b"hello, I am text", {}, 400, "not a decodable image"),
    (jpeg()[:40], {}, 400, "not a decodable image"),
    (jpeg(), {"box": "0,0,500,50"}, 422, "outside"),
    (jpeg(), {"box": "1,2,3"}, 400, "four finite numbers"),
    (jpeg(), {"box": "inf,0,10,10"}, 400, "four finite numbers"),
    (jpeg(), {"k": "0"}, 400, "from 1 to 100"),
    (jpeg(), {"k": "many"}, 400, "whole number"),
    (jpeg(), {"k": " 5 "}, 400, "digits only"),
    (jpeg(), {"k": "\u0663"}, 400, "digits only"),
])
def test_search_errors(client, data, form, status, message):
    r = upload(client, "/api/search", data, **form)
    assert r.status_code == status
    assert message in r.get_json()["error"]


def test_upload_too_large(client):
    r = upload(client, "/api/search", jpeg(800, 800, seed=1) * 3)
    assert r.status_code == 413 and "upload too large" in r.get_json()["error"]


def test_a_form_of_too_many_parts_is_told_so_not_that_it_is_too_large(client):
    fields = {f"f{i}": "1" for i in range(1001)}  # a few KB: under the byte limit
    r = client.post("/api/search", data={"image": (io.BytesIO(jpeg()), "p.jpg"), **fields}, content_type="multipart/form-data")
    assert r.status_code == 413 and "over 1000 parts" in r.get_json()["error"] and "upload too large" not in r.get_json()["error"]


def test_products_and_scenes(client, tiny_catalog: Path):
    pid = load_catalog(tiny_catalog).product_ids[0]
    body = client.get(f"/api/products/{pid}").get_json()
    assert body["product_id"] == pid and body["images"] == [f"/images/products/{pid}?n=0"]
    img = client.get(body["images"][0])
    assert img.status_code == 200 and img.mimetype == "image/png"
    scenes = client.get(f"/api/products/{pid}/scenes?k=3").get_json()["scenes"]
    assert 1 <= len(scenes) <= 3 and all(s["box"] for s in scenes)
    assert len({s["scene"] for s in scenes}) == len(scenes)  # best crop per scene
    assert client.get(scenes[0]["image_url"]).status_code == 200
    index = client.application.extensions["showroom"].served.engine.scenes  # each room's 14 fixed windows beside its crops
    rooms = {it.scene for it in index.items}
    assert [it.label for it in index.items].count("window") == 14 * len(rooms)
    assert all(it.type == "" for it in index.items if it.label == "window")  # of no product group: never a group's crop
    for url in ("/api/products/nope", "/api/products/nope/scenes", "/products/nope", "/images/products/nope", "/images/scenes/nope"):
        r = client.get(url)
        assert r.status_code == 404 and "unknown" in r.get_json()["error"], url
    assert client.get(f"/images/products/{pid}?n=7").status_code == 404


def test_pages_render(client, tiny_catalog: Path):
    page = client.get("/").get_data(as_text=True)
    assert "Drop a photo" in page and '<option value="Chair">' in page
    pid = load_catalog(tiny_catalog).product_ids[0]
    assert "Where is it used?" in client.get(f"/products/{pid}").get_data(as_text=True)
    assert client.get("/static/showroom.js").status_code == 200


def test_reload_needs_the_token_and_swaps_without_failed_queries(app, client, index_folder: Path):
    assert client.post("/api/reload").status_code == 403
    assert client.post("/api/reload", headers={"X-Reload-Token": "wrong"}).status_code == 403
    errors: list[int] = []
    stop = threading.Event()

    def hammer():
        c = app.test_client()
        while not stop.is_set():
            r = upload(c, "/api/search", jpeg(), box="0,0,60,60", k="3")
            if r.status_code != 200:
                errors.append(r.status_code)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            r = client.post("/api/reload", headers={"X-Reload-Token": "s3cret"})
            assert r.status_code == 200 and r.get_json()["status"] == "reloaded"
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []


def test_reload_refuses_a_damaged_index_and_keeps_serving(app, client, index_folder: Path, tmp_path: Path):
    import shutil

    broken = tmp_path / "idx"
    shutil.copytree(index_folder, broken)
    from serving.state import ServingState, load_from_folder

    state = ServingState(load_from_folder(broken), lambda: broken, lambda folder, n: load_from_folder(folder, generation=n))
    app.extensions["showroom"] = state
    items = json.loads((broken / "products" / "items.json").read_text())
    items["columns"]["name"][0] = "tampered"
    (broken / "products" / "items.json").write_text(json.dumps(items))
    r = client.post("/api/reload", headers={"X-Reload-Token": "s3cret"})
    assert r.status_code == 409 and "checksum" in r.get_json()["error"]
    assert client.get("/healthz").status_code == 200


def test_reload_off_without_token(index_folder: Path):
    from serving import create_app

    c = create_app({"SHOWROOM_INDEX": str(index_folder), "TESTING": True}).test_client()
    assert c.post("/api/reload").status_code == 404


def test_serves_from_a_milvus_backed_folder_with_the_same_answers(app, client, milvus_index_folder: Path, tiny_catalog: Path):
    from serving import create_app

    config = {k: app.config[k] for k in ("SHOWROOM_DETECTOR", "SHOWROOM_RELOAD_TOKEN", "SHOWROOM_RATE_LIMIT", "TESTING")}
    milvus = create_app({**config, "SHOWROOM_INDEX": str(milvus_index_folder)}).test_client()
    health = milvus.get("/healthz").get_json()
    assert health["index_kind"] == "milvus" and health["products"] == 18 and health["model"] == client.get("/healthz").get_json()["model"]
    assert {t["chosen"] for t in health["index_tuning"].values()} == {"milvus"} and health["index_tuning"]["products"]["recall"] == 1.0

    scene = load_catalog(tiny_catalog).scenes[0]
    for data, form in ((scene.image.read_bytes(), {"box": "10,10,100,100", "k": "5"}), (jpeg(), {"k": "12"})):
        want, got = (upload(c, "/api/search", data, **form).get_json() for c in (client, milvus))
        assert set(got) == set(want) and set(got["results"][0]) == set(want["results"][0])
        assert [r["product_id"] for r in got["results"]] == [r["product_id"] for r in want["results"]]  # FLAT: exact
        np.testing.assert_allclose([r["distance"] for r in got["results"]], [r["distance"] for r in want["results"]], rtol=1e-4, atol=1e-5)
        assert {k: v for k, v in got.items() if k not in ("results", "timings_ms")} == {k: v for k, v in want.items() if k not in ("results", "timings_ms")}
    pid = want["results"][0]["product_id"]
    got, want = (c.get(f"/api/products/{pid}/scenes?k=3").get_json() for c in (milvus, client))
    # the same scenes in the same order; distances equal up to float rounding (they are sent rounded to 5 decimals)
    assert [{k: v for k, v in s.items() if k != "distance"} for s in got["scenes"]] == \
        [{k: v for k, v in s.items() if k != "distance"} for s in want["scenes"]]
    np.testing.assert_allclose([s["distance"] for s in got["scenes"]], [s["distance"] for s in want["scenes"]], atol=2e-5)
    assert {k: v for k, v in got.items() if k != "scenes"} == {k: v for k, v in want.items() if k != "scenes"}
    r = milvus.post("/api/reload", headers={"X-Reload-Token": "s3cret"})  # reopens the collections in this process
    assert r.status_code == 200 and milvus.get("/healthz").get_json()["index_kind"] == "milvus"


def _fake_run(home: Path, run_id: str, index_folder: Path, saved: float, *, killed: bool = False) -> Path:
    """``home/models/<run_id>/index`` as ``training.fit`` leaves it (a copy of ``index_folder``), its products
    index saved at ``saved``; ``killed``: the run's checkpoint folder is still there, as after a kill."""
    import os
    import shutil

    folder = home / "models" / run_id / "index"
    shutil.copytree(index_folder, folder)
    os.utime(folder / "products" / "manifest.json", (saved, saved))
    if killed:
        (home / "checkpoints" / run_id).mkdir(parents=True)
        (home / "checkpoints" / run_id / "state.json").write_text("{}")
    return folder


def test_without_showroom_index_the_latest_finished_fit_run_is_served(index_folder: Path, tmp_path: Path, monkeypatch, caplog):
    import logging

    from serving import create_app
    from serving.app import trained_indexes

    home = tmp_path / "home"
    monkeypatch.setenv("SHOWROOM_HOME", str(home))
    monkeypatch.delenv("SHOWROOM_INDEX", raising=False)
    _fake_run(home, "a" * 32, index_folder, 1_000_000)
    newest = _fake_run(home, "b" * 32, index_folder, 2_000_000)
    _fake_run(home, "c" * 32, index_folder, 3_000_000, killed=True)  # killed after saving, before its checkpoint was removed
    half = _fake_run(home, "d" * 32, index_folder, 4_000_000)  # killed while its products index was being written
    (half / "products" / "manifest.json").unlink()
    scenes_missing = _fake_run(home, "e" * 32, index_folder, 5_000_000)  # killed while its scenes index was being written
    (scenes_missing / "scenes" / "manifest.json").unlink()
    (home / "models" / ("f" * 32)).mkdir()  # --no-index, or killed before the index: only embedder.keras
    (home / "models" / ("f" * 32) / "embedder.keras").write_bytes(b"")
    assert [t.run_id for t in trained_indexes(home)] == ["a" * 32, "b" * 32]

    with caplog.at_level(logging.INFO, logger="serving.app"):
        client = create_app({"TESTING": True, "SHOWROOM_RATE_LIMIT": ""}).test_client()
    assert client.get("/healthz").get_json()["source"] == str(newest)
    said = [r.getMessage() for r in caplog.records if r.name == "serving.app"]
    assert any(str(newest) in m and "b" * 32 in m and "SHOWROOM_INDEX" in m for m in said), said


def test_without_showroom_index_or_a_trained_run_the_error_says_to_train_first(tmp_path: Path, monkeypatch):
    from serving import create_app
    from serving.app import ServingSetupError

    monkeypatch.setenv("SHOWROOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SHOWROOM_INDEX", raising=False)
    with pytest.raises(ServingSetupError, match=r"no finished training run .*run `python -m training.fit` first"):
        create_app({"TESTING": True})


def test_showroom_index_wins_over_the_latest_run(index_folder: Path, tmp_path: Path, monkeypatch, copy_of):
    from engine.index.generations import publish_generation
    from serving import create_app

    home = tmp_path / "home"
    monkeypatch.setenv("SHOWROOM_HOME", str(home))
    _fake_run(home, "a" * 32, index_folder, 1_000_000)
    served = publish_generation(tmp_path / "serve", copy_of(index_folder))
    monkeypatch.setenv("SHOWROOM_INDEX", str(tmp_path / "serve"))
    assert create_app({"TESTING": True}).test_client().get("/healthz").get_json()["source"] == str(served)


@pytest.mark.slow
def test_a_real_fit_run_is_found_where_fit_saves_it(trained_run):
    """The layout ``trained_indexes`` reads is the one ``training.fit`` writes."""
    from engine.runtime import state_dir
    from serving.app import trained_indexes

    found = {t.run_id: t.folder for t in trained_indexes(state_dir())}
    assert trained_run.run_id in found and (found[trained_run.run_id] / "model.keras").is_file()


# --- shop this room, and a tap on the photo -------------------------------------------------------

def test_room_lists_every_object_with_its_group_and_matches_within_it(client, tiny_catalog: Path):
    catalog = load_catalog(tiny_catalog)
    r = upload(client, "/api/room", catalog.scenes[0].image.read_bytes(), k="3")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    w, h = body["width"], body["height"]
    # the fake detector's boxes: a chair (seating) in the middle and a couch (sofa) top left, both sure; a potted
    # plant (vase group) below the confidence a box needs, proposed as its class's fill-in: less sure
    assert [(o["label"], o["group"], o["sure"]) for o in body["objects"]] == [
        ("chair", "seating", True), ("couch", "sofa", True), ("potted plant", "vase", False)]
    assert body["objects"][0]["box"] == [w // 4, h // 4, 3 * w // 4, 3 * h // 4]
    types = catalog.types
    for o, group_type in zip(body["objects"], ("Chair", "Sofa", "Vase")):
        assert len(o["results"]) == 3 and {types[x["product_id"]] for x in o["results"]} == {group_type}  # searched within the group
    # the room list: an object's r-th match at r / its confidence (0.9, 0.5, 0.1): chair 1.1 2.2 3.3,
    # couch 2 4 6, plant 10 20 30; the groups hold distinct products, so all 9 are listed once
    (c1, c2, c3), (s1, s2, s3), (p1, p2, p3) = ([x["product_id"] for x in o["results"]] for o in body["objects"])
    assert body["products"] == [c1, s1, c2, c3, s2, s3, p1, p2, p3]
    assert {"decode", "detect", "embed", "search", "total"} <= set(body["timings_ms"])


def test_the_room_order_is_a_setting_of_the_server(index_folder: Path, tiny_catalog: Path, monkeypatch):
    app = app_with_setting(index_folder, monkeypatch, "SHOWROOM_ROOM_ORDER", "best",
                           "SHOWROOM_ROOM_ORDER must be one of turns, distance, confidence, got 'best'", "turns")
    assert app.extensions["showroom"].served.engine.room_order == "turns"
    body = upload(app.test_client(), "/api/room", load_catalog(tiny_catalog).scenes[0].image.read_bytes(), k="3").get_json()
    # turns: every object's first match, then every second, then every third
    (c1, c2, c3), (s1, s2, s3), (p1, p2, p3) = ([x["product_id"] for x in o["results"]] for o in body["objects"])
    assert body["products"] == [c1, s1, p1, c2, s2, p2, c3, s3, p3]


class CopyingDetector(BoxDetector):
    """BoxDetector plus a weaker chair box nearly copying the first chair: the page offers one chair."""

    def detect(self, image):
        h, w = image.shape[:2]
        return [*super().detect(image), Detection((w // 4 + 1, h // 4 + 1, 3 * w // 4, 3 * h // 4), "chair", 0.6)]


def test_room_offers_the_boxes_the_page_draws_no_near_copies(index_folder: Path):
    from serving import create_app

    app = create_app({"SHOWROOM_INDEX": str(index_folder), "SHOWROOM_DETECTOR": CopyingDetector(), "TESTING": True,
                      "SHOWROOM_RATE_LIMIT": ""})
    body = upload(app.test_client(), "/api/room", jpeg(), k="2").get_json()
    assert [(o["label"], o["confidence"]) for o in body["objects"]] == [("chair", 0.9), ("couch", 0.5), ("potted plant", 0.1)]


def test_room_refuses_bad_input_like_search(client):
    assert upload(client, "/api/room").status_code == 400
    assert upload(client, "/api/room", jpeg(), k="0").status_code == 400
    assert upload(client, "/api/room", b"not a photo").status_code == 400


def test_a_tap_searches_the_smallest_object_under_it_else_a_square_around_it(client):
    # 160 x 120: the chair box is (40, 30, 120, 90), the couch box (0, 0, 53, 40)
    r = upload(client, "/api/search", jpeg(), point="60,60", k="4")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["box"] == [40, 30, 120, 90] and body["label"] == "chair" and body["group"] == "seating" and len(body["results"]) == 3  # k=4, but the catalog has 3 chairs
    body = upload(client, "/api/search", jpeg(), point="10,10").get_json()
    assert body["box"] == [0, 0, 53, 40] and body["label"] == "couch"
    body = upload(client, "/api/search", jpeg(), point="45,35").get_json()
    assert body["label"] == "couch"  # inside both: the smaller one
    body = upload(client, "/api/search", jpeg(), point="150,20").get_json()
    assert body["box"] == [128, 6, 152, 36] and body["label"] == "potted plant" and body["group"] == "vase"  # a less sure object
    body = upload(client, "/api/search", jpeg(), point="150,110").get_json()
    assert body["box"] == [120, 80, 160, 120] and body["label"] == ""  # nothing there: a square of a third of 120, kept in the photo


def test_a_proposed_object_is_searched_within_its_group_unless_the_shopper_says_otherwise(client, tiny_catalog: Path):
    types = load_catalog(tiny_catalog).types
    found = lambda body: {types[r["product_id"]] for r in body["results"]}  # noqa: E731
    # a tap on the chair: its region's group (seating) holds the catalog's chairs only
    body = upload(client, "/api/search", jpeg(), point="60,60", k="18").get_json()
    assert body["in_group"] == "seating" and found(body) == {"Chair"} and len(body["results"]) == 3
    body = upload(client, "/api/search", jpeg(), point="60,60", k="18", group="all").get_json()  # the whole catalog
    assert body["in_group"] is None and len(body["results"]) == 18
    # a box searches everything unless the page names the group of the object it drew
    body = upload(client, "/api/search", jpeg(), box="40,30,120,90", k="18").get_json()
    assert body["in_group"] is None and len(body["results"]) == 18
    body = upload(client, "/api/search", jpeg(), box="40,30,120,90", k="18", group="sofa").get_json()
    assert body["in_group"] == "sofa" and found(body) == {"Sofa"}
    # the shopper's own types win over a group; a tap on nothing keeps to no group
    body = upload(client, "/api/search", jpeg(), point="60,60", k="18", types="Lamp").get_json()
    assert body["in_group"] is None and found(body) == {"Lamp"}
    body = upload(client, "/api/search", jpeg(), point="150,110", k="18").get_json()
    assert body["label"] == "" and body["in_group"] is None and len(body["results"]) == 18
    r = upload(client, "/api/search", jpeg(), box="40,30,120,90", group="spaceship")
    assert r.status_code == 400 and "unknown product group 'spaceship'" in r.get_json()["error"] and "seating" in r.get_json()["error"]


@pytest.mark.parametrize("point,status", [("1,2,3", 400), ("x,y", 400), ("nan,3", 400), ("200,10", 422), ("-1,5", 422)])
def test_bad_points(client, point, status):
    r = upload(client, "/api/search", jpeg(), point=point)
    assert r.status_code == status and "point" in r.get_json()["error"]
    assert upload(client, "/api/search", jpeg(), point="5,5", box="1,1,50,50").status_code == 400


def test_a_calibrated_generation_says_no_close_match_below_its_threshold(index_folder: Path, tmp_path: Path):
    import shutil

    from engine.calibration import FILE, MatchCalibrator
    from engine.model.embedder import model_fingerprint
    from serving import create_app

    folder = tmp_path / "calibrated"
    shutil.copytree(index_folder, folder)
    fp = model_fingerprint(folder / "model.keras")
    answers = {}
    for name, threshold in (("never close", 1.0), ("always close", 0.0)):
        MatchCalibrator((3.0, -4.0, 2.0), threshold, fp).save(folder / FILE)
        client = create_app({"SHOWROOM_INDEX": str(folder), "SHOWROOM_DETECTOR": BoxDetector(), "TESTING": True,
                             "SHOWROOM_RATE_LIMIT": ""}).test_client()
        answers[name] = upload(client, "/api/search", jpeg(), k="4").get_json()
        room = upload(client, "/api/room", jpeg(), k="3").get_json()
        assert all("close_match" in o and "same_product_probability" in o["results"][0] for o in room["objects"])
    never, always = answers["never close"], answers["always close"]
    assert never["close_match"] is False and never["verdict"] == "no close match in the catalog"
    assert always["close_match"] is True and "verdict" not in always
    probs = [r["same_product_probability"] for r in always["results"]]
    d = np.array([[r["distance"] for r in always["results"]]])
    assert probs == pytest.approx(MatchCalibrator((3.0, -4.0, 2.0), 0.0, fp).results(d)[0], abs=1e-3)
    assert probs[0] == max(probs)  # the best result stands clear of the rest: the most likely to be the product

    uncalibrated = create_app({"SHOWROOM_INDEX": str(index_folder), "SHOWROOM_DETECTOR": BoxDetector(), "TESTING": True,
                               "SHOWROOM_RATE_LIMIT": ""}).test_client()
    plain = upload(uncalibrated, "/api/search", jpeg(), k="4").get_json()
    assert plain["close_match"] is None and "same_product_probability" not in plain["results"][0]

    MatchCalibrator((3.0, -4.0, 2.0), 0.5, "another-model").save(folder / FILE)
    from serving.app import ServingSetupError

    with pytest.raises(ServingSetupError, match="fitted on model another"):
        create_app({"SHOWROOM_INDEX": str(folder), "SHOWROOM_DETECTOR": BoxDetector(), "TESTING": True, "SHOWROOM_RATE_LIMIT": ""})


def test_a_large_jpeg_is_decoded_smaller_and_answered_in_its_own_pixels(index_folder):
    """A 6000 x 3904 JPEG is decoded at half size by libjpeg (SHOWROOM_DECODE_LONG_SIDE 3000); every box
    and point of the API stays in the photo's own pixels, and the search finds what the whole decode finds."""
    from serving import create_app

    big = cv2.resize(np.random.default_rng(2).integers(0, 255, (39, 60, 3), dtype=np.uint8), (6000, 3904), interpolation=cv2.INTER_LINEAR)
    data = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    answers = {}
    for side in (3000, 0):  # 0: decoded whole, as before
        app = create_app({"SHOWROOM_INDEX": str(index_folder), "SHOWROOM_DETECTOR": BoxDetector(), "TESTING": True,
                          "SHOWROOM_RATE_LIMIT": "", "SHOWROOM_DECODE_LONG_SIDE": side, "MAX_CONTENT_LENGTH": 20_000_000})
        c = app.test_client()
        budget = app.extensions["showroom_decode_budget"]
        detected = upload(c, "/api/detect", data).get_json()
        searched = upload(c, "/api/search", data, box="1000,800,3000,2400", k="5").get_json()
        tapped = upload(c, "/api/search", data, point="3000,1950", k="5").get_json()
        answers[side] = (detected, searched, tapped, budget.peak)
    (detected, searched, tapped, reduced_peak), (whole_detected, whole_searched, whole_tapped, whole_peak) = answers[3000], answers[0]
    assert (detected["width"], detected["height"]) == (6000, 3904)
    assert detected["detections"][0]["box"] == [1500, 976, 4500, 2928] == whole_detected["detections"][0]["box"]
    assert searched["box"] == [1000, 800, 3000, 2400]
    assert np.abs(np.subtract(tapped["box"], whole_tapped["box"])).max() <= 2  # the same region, to the reduced pixel
    assert [r["product_id"] for r in searched["results"]] == [r["product_id"] for r in whole_searched["results"]]
    assert reduced_peak * 3 < whole_peak  # a quarter of the pixels: about a quarter of the decode budget

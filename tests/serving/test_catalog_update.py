"""POST /api/catalog: products added, updated and removed through the API are published as the next
generation and served at once, with their in-room views blended when sent; the operator's token,
the uploaded photos' and views' names and contents, the rows and the ids are checked first, and a
refused update publishes nothing."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.index.catalog_index import CatalogIndex, read_manifest
from engine.index.generations import current_generation, resolve_serving_folder

AUTH = {"X-Reload-Token": "s3cret"}


def _png(colour: tuple[int, int, int], size: int = 64) -> bytes:
    return cv2.imencode(".png", np.full((size, size, 3), colour, np.uint8))[1].tobytes()


@pytest.fixture()
def client(served: Path):
    from serving import create_app

    return create_app({"SHOWROOM_INDEX": str(served), "TESTING": True, "SHOWROOM_RELOAD_TOKEN": "s3cret",
                       "SHOWROOM_RATE_LIMIT": ""}).test_client()


def _post(client, headers=AUTH, **fields):
    data = {}
    for key, value in fields.items():
        if key == "photos":
            data["photo"] = [(io.BytesIO(b), name) for name, b in value.items()]
        elif key == "view_files":
            data["view"] = [(io.BytesIO(b), name) for name, b in value.items()]
        elif key == "views":
            data[key] = (io.BytesIO(value), "manifest.json")
        elif isinstance(value, bytes):
            data[key] = (io.BytesIO(value), f"{key}.csv")
        else:
            data[key] = value
    return client.post("/api/catalog", data=data, headers=headers, content_type="multipart/form-data")


def test_products_added_and_removed_through_the_api_are_served_at_once(client, served: Path):
    before = client.get("/healthz").get_json()
    products = client.application.extensions["showroom"].served.engine.products
    gone = products.items[0].product_id
    add = b"product_id,name,type,image,price\nNEW-1,Yellow lamp,Lamp,yellow.png,19\nNEW-2,Blue lamp,Lamp,blue.png,24\n"
    r = _post(client, add=add, remove=gone, photos={"yellow.png": _png((10, 220, 240)), "blue.png": _png((200, 30, 10))})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "updated" and body["generation"] == before["generation"] + 1
    assert body["products"] == len(products) + 2 - len(products.items_of(gone))
    assert body["report"]["products_added"] == 2 and body["report"]["embedded"] == 2
    assert body["report"]["method"].startswith("segmented")  # 4 of 18 base rows changed: due, but never compacted in the request
    assert body["report"]["method"].endswith("not compacted by this delta)")
    assert body["compaction"] == "started"
    new = client.get("/api/products/NEW-1").get_json()
    assert new["name"] == "Yellow lamp" and client.get(f"/api/products/{gone}").status_code == 404
    image = client.get("/images/products/NEW-1")
    assert image.status_code == 200 and cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_COLOR)[0, 0].tolist() == [10, 220, 240]
    kept = sorted((served / "photos").iterdir())
    assert len(kept) == 2 and all(len(p.stem) == 64 and p.suffix == ".png" for p in kept)  # content-addressed, outside the generations
    assert client.get("/healthz").get_json()["generation"] == body["generation"]
    compactor = client.application.extensions["showroom_compactor"]
    assert compactor.join(timeout=120)
    assert "error" not in compactor.last and compactor.last["method"] == "compacted into one flat index"
    assert read_manifest(resolve_serving_folder(served) / "products").get("layout") != "segmented"
    health = client.get("/healthz").get_json()
    assert health["generation"] == body["generation"] + 1  # the compacted generation, served by the worker that made it
    assert client.get("/api/products/NEW-2").get_json()["name"] == "Blue lamp" and client.get(f"/api/products/{gone}").status_code == 404


def test_a_delta_below_the_compaction_share_starts_none(client, served: Path):
    add = b"product_id,name,type,image\nNEW-1,Yellow lamp,Lamp,yellow.png\n"  # 1 of 18 base rows
    body = _post(client, add=add, photos={"yellow.png": _png((10, 220, 240))}).get_json()
    assert body["status"] == "updated" and body["report"]["method"].startswith("segmented") and body["compaction"] == "not due"


def test_an_update_is_answered_even_when_its_compaction_share_cannot_be_read(client, served: Path, monkeypatch):
    import serving.catalog_update as update

    def unreadable(folder):
        raise OSError("manifest.json: unreadable")

    monkeypatch.setattr(update, "compaction_share", unreadable)
    body = _post(client, remove=client.application.extensions["showroom"].served.engine.products.items[0].product_id).get_json()
    assert body["status"] == "updated" and body["compaction"] == "not checked"


def test_a_compaction_waits_for_another_builder_then_serves_its_generation_once(served: Path):
    from engine.index import generations
    from engine.index.delta import CatalogDelta
    from serving.catalog_update import BackgroundCompactor, compaction_share, publish_delta

    products = CatalogIndex.load(resolve_serving_folder(served) / "products")
    remove = tuple(dict.fromkeys(it.product_id for it in products.items))[:3]
    publish_delta(served, CatalogDelta(remove=remove), lambda *_: None, compact_above=math.inf)
    segmented = current_generation(served)
    assert compaction_share(served) > 0.1
    reloads: list[str] = []
    compactor = BackgroundCompactor(served, lambda: reloads.append(current_generation(served)), retry_seconds=0.05, attempts=200)
    with generations._build_lock(served):  # another builder holds the folder
        assert compactor.request() == "started"
        time.sleep(0.3)
        assert compactor.request() == "running" and not reloads and current_generation(served) == segmented
    assert compactor.join(timeout=120)
    assert reloads == [current_generation(served)] and reloads[0] != segmented and compaction_share(served) == 0.0
    kept = CatalogIndex.load(resolve_serving_folder(served) / "products")
    assert sorted(it.item_id for it in kept.items) == sorted(it.item_id for it in products.items if it.product_id not in remove)
    assert compactor.request() == "not due" and compactor.join(timeout=5) and len(reloads) == 1  # nothing to do twice


@pytest.mark.parametrize("fields,status,message", [
    ({"add": b"product_id,name,type,image\nNEW-1,Lamp,Lamp,../model.keras\n", "photos": {"a.png": _png((1, 2, 3))}}, 400,
     "not one of the uploaded photos"),
    ({"add": b"product_id,name,type,image\nNEW-1,Lamp,Lamp,x.png\n", "photos": {"x.png": b"not an image"}}, 400, "x.png"),
    ({"add": b"product_id,name,type,image\nNEW-1,Lamp,Lamp,a.png\n", "photos": {"../a.png": _png((1, 2, 3))}}, 400, "file name"),
    ({"add": b"product_id,name\nNEW-1,Lamp\n", "photos": {}}, 400, "no 'image' column"),
    ({"add": b"product_id,name,image\nNEW-1,Lamp,a.png\n", "photos": {"a.png": _png((1, 2, 3))}}, 400, "add.csv"),
    ({"remove": "NO-SUCH"}, 409, "not in the index"),
    ({}, 400, "nothing to change"),
])
def test_a_refused_update_publishes_nothing(client, served: Path, fields, status, message):
    generation = current_generation(served)
    r = _post(client, **fields)
    assert r.status_code == status and message in r.get_json()["error"] and str(served) not in r.get_json()["error"]
    assert current_generation(served) == generation
    assert not list((served / "photos").iterdir()) if (served / "photos").exists() else True  # no photo kept, no temporary left


def test_catalog_updates_need_the_operators_token(client, served: Path):
    assert _post(client, headers={}, remove="X").status_code == 403
    assert _post(client, headers={"X-Reload-Token": "wrong"}, remove="X").status_code == 403
    from serving import create_app

    off = create_app({"SHOWROOM_INDEX": str(served), "TESTING": True, "SHOWROOM_RATE_LIMIT": ""}).test_client()
    assert _post(off, remove="X").status_code == 404


def test_a_refused_delta_keeps_none_of_its_photos_and_a_busy_folder_is_a_409_to_retry(client, served: Path):
    import fcntl

    existing = client.application.extensions["showroom"].served.engine.products.items[0].product_id
    add = f"product_id,name,type,image\n{existing},Again,Lamp,again.png\n".encode()
    r = _post(client, add=add, photos={"again.png": _png((9, 9, 9))})
    assert r.status_code == 409 and "already in the index" in r.get_json()["error"]
    assert not [p for p in (served / "photos").iterdir()]  # the photo stored for it went with the refusal
    with open(served / ".lock", "a") as fh:  # a build is writing the folder
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = _post(client, remove=existing)
        fcntl.flock(fh, fcntl.LOCK_UN)
    assert r.status_code == 409 and "another build" in r.get_json()["error"] and r.headers["Retry-After"] == "5"
    assert _post(client, remove=existing).status_code == 200  # once it is done


def test_a_photo_sent_again_is_kept_young_so_no_publish_collects_it_before_its_delta_names_it(client, served: Path):
    import os
    import time

    from engine.index.generations import PHOTO_GRACE_SECONDS

    photo = {"red.png": _png((0, 0, 200))}
    assert _post(client, add=b"product_id,name,type,image\nNEW-1,Red lamp,Lamp,red.png\n", photos=photo).status_code == 200
    (stored,) = (served / "photos").iterdir()
    old = time.time() - 2 * PHOTO_GRACE_SECONDS
    os.utime(stored, (old, old))
    r = _post(client, add=b"product_id,name,type,image\nNEW-2,Red lamp too,Lamp,red.png\n", photos=photo)
    assert r.status_code == 200 and r.get_json()["report"]["reused"] >= 1
    assert [p.name for p in (served / "photos").iterdir()] == [stored.name] and stored.stat().st_mtime > old + PHOTO_GRACE_SECONDS


YELLOW = _png((10, 220, 240))


def _room(colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> bytes:
    """A 96-px grey room with a ``colour`` product at ``box`` (x1, y1, x2, y2)."""
    room = np.full((96, 96, 3), (120, 130, 140), np.uint8)
    x1, y1, x2, y2 = box
    room[y1:y2, x1:x2] = colour
    return cv2.imencode(".png", room)[1].tobytes()


def _views(tmp_path: Path, views: list[tuple[str, str, str, tuple]], photo: bytes = YELLOW) -> bytes:
    """A synthetic-views manifest as ``training.synthesize`` writes it: (product, type, image, box) a
    view, each cut out of ``photo``."""
    import hashlib

    from training.synthesis import SyntheticManifest, SyntheticView, save_synthetic_manifest

    sha = hashlib.sha256(photo).hexdigest()
    manifest = SyntheticManifest("api", "x", [SyntheticView(pid, type_, "scene-1", image, box, i, {"photo_sha256": sha})
                                              for i, (pid, type_, image, box) in enumerate(views)])
    return save_synthetic_manifest(manifest, tmp_path / "manifest.json").read_bytes()


def test_the_in_room_views_sent_with_an_added_product_are_blended_into_its_vector(client, served: Path, tmp_path: Path):
    from engine.index.serving_folder import photo_images
    from engine.index.views import ProductView, fuse_views, view_crops

    boxes = [(20, 30, 60, 80), (40, 10, 90, 50)]
    rooms = {"v0.png": _room((10, 220, 240), boxes[0]), "v1.png": _room((10, 200, 230), boxes[1])}
    manifest = _views(tmp_path, [("NEW-1", "Lamp", "views/v0.png", boxes[0]), ("NEW-1", "Lamp", "views/v1.png", boxes[1]),
                                 ("ELSEWHERE", "Chair", "views/v9.png", (0, 0, 5, 5))])  # another product's: left out
    add = b"product_id,name,type,image\nNEW-1,Yellow lamp,Lamp,yellow.png\nNEW-2,Plain lamp,Lamp,grey.png\n"
    r = _post(client, add=add, photos={"yellow.png": YELLOW, "grey.png": _png((90, 90, 90))}, views=manifest, view_files=rooms)
    assert r.status_code == 200, r.get_json()
    report = r.get_json()["report"]
    assert report["views"]["views"] == 2 and report["views"]["products"] == 1 and report["views"]["weight"] == 0.25
    assert report["views"]["source"] == "uploaded manifest.json" and report["without_views"] == 0  # the index blends none
    served_now = client.application.extensions["showroom"].served
    embedder, products = served_now.engine.embedder, served_now.engine.products
    prep = embedder.preprocessing
    for name, data in {**rooms, "yellow.png": YELLOW}.items():
        (tmp_path / name).write_bytes(data)
    raw = embedder(photo_images([tmp_path / "yellow.png"], prep))
    views = embedder(view_crops([ProductView("NEW-1", tmp_path / n, b) for n, b in zip(rooms, boxes)], prep.image_size,
                                prep.crop_padding))
    expected = fuse_views(raw, ["NEW-1"], views, ["NEW-1", "NEW-1"], 0.25)[0]
    (row,) = [i for i, it in enumerate(products.items) if it.product_id == "NEW-1"]
    np.testing.assert_allclose(products.vectors[row], expected, atol=1e-5)
    assert np.abs(expected - raw[0]).max() > 1e-3  # the blend moved it: the check above can fail
    (plain,) = [i for i, it in enumerate(products.items) if it.product_id == "NEW-2"]
    (tmp_path / "grey.png").write_bytes(_png((90, 90, 90)))
    np.testing.assert_allclose(products.vectors[plain], embedder(photo_images([tmp_path / "grey.png"], prep))[0], atol=1e-5)


@pytest.mark.parametrize("case,message", [
    ("another type", "has type 'Chair' in its views and 'Lamp' in the delta"),
    ("box outside", "is not inside its 96x96 image"),
    ("stray file", "v7.png named by no view"),
    ("missing file", "'v1.png' of 'NEW-1' is not one of the uploaded view files"),
    ("escaping path", "is not a plain relative file name"),
    ("no manifest", "without the 'views' manifest"),
    ("views without rows", "blend the products 'add' or 'update' bring"),
    ("another photo", "cut out of another photo"),
    ("not an image", "v0.png"),
    ("not a manifest", "manifest.json"),
    ("one name twice", "two views' images are named 'v0.png'"),
])
def test_views_that_do_not_fit_are_refused_and_nothing_is_published_or_kept(client, served: Path, tmp_path: Path, case, message):
    box = (20, 30, 60, 80)
    rooms = {"v0.png": _room((10, 220, 240), box), "v1.png": _room((10, 200, 230), box)}
    views = [("NEW-1", "Lamp", "views/v0.png", box), ("NEW-1", "Lamp", "views/v1.png", box)]
    fields = {"add": b"product_id,name,type,image\nNEW-1,Yellow lamp,Lamp,yellow.png\n", "photos": {"yellow.png": YELLOW}}
    photo = YELLOW
    if case == "another type":
        views[1] = ("NEW-1", "Chair", "views/v1.png", box)
    elif case == "box outside":
        views[1] = ("NEW-1", "Lamp", "views/v1.png", (20, 30, 60, 120))
    elif case == "stray file":
        rooms["v7.png"] = rooms["v0.png"]
    elif case == "missing file":
        del rooms["v1.png"]
    elif case == "escaping path":
        views[1] = ("NEW-1", "Lamp", "../v1.png", box)
    elif case == "another photo":
        photo = _png((1, 2, 3))
    elif case == "one name twice":
        views[1] = ("NEW-1", "Lamp", "other/v0.png", box)
        del rooms["v1.png"]
    elif case == "not an image":
        rooms["v0.png"] = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    manifest = b'{"format": "something else"}' if case == "not a manifest" else _views(tmp_path, views, photo)
    fields.update(views=manifest, view_files=rooms)
    if case == "no manifest":
        del fields["views"]
    if case == "views without rows":
        fields = {"remove": client.application.extensions["showroom"].served.engine.products.items[0].product_id,
                  "views": manifest, "view_files": rooms}
    generation = current_generation(served)
    r = _post(client, **fields)
    assert r.status_code == 400 and message in r.get_json()["error"], r.get_json()
    assert str(tmp_path) not in r.get_json()["error"] and "showroom-views-" not in r.get_json()["error"]
    assert current_generation(served) == generation
    assert not list((served / "photos").iterdir()) if (served / "photos").exists() else True  # the staged photo went with it

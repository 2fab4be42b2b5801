"""HTML pages (upload & results, product page) and images served by id, never by a client-given path."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request, send_file, url_for

from engine.data.proposals import WINDOW
from serving.errors import ApiError
from serving.records import current_engine, health, product_record, read_index, scene_title, scenes_json

bp = Blueprint("pages", __name__)


def _catalog_root() -> str | None:
    return current_app.config.get("SHOWROOM_CATALOG_ROOT")


def _send(path, what: str):
    if not path.is_file():  # the index is fine but the catalog's images are not where it says
        raise ApiError(404, f"the image of {what} is not on this server; set SHOWROOM_CATALOG_ROOT to the catalog folder")
    return send_file(path, max_age=3600)


EXAMPLES = 4  # room photos offered on the upload page to try without a photo of one's own


def _example_scenes(n: int = EXAMPLES) -> list[dict]:
    """A few indexed room photos to try: from the most common room types, in each the photo with
    the most kinds of objects found (the same ones on every visit)."""
    scenes = current_engine().scenes
    if scenes is None:
        return []
    labels: dict[str, set[str]] = {}
    room: dict[str, str] = {}
    for it in scenes.items:
        if it.scene and it.label != WINDOW:  # the fixed windows: every room has the same
            labels.setdefault(it.scene, set()).add(it.label)
            room[it.scene] = it.room_type
    by_room: dict[str, list[str]] = {}
    for scene in sorted(labels, key=lambda s: (-len(labels[s]), s)):
        by_room.setdefault(room[scene], []).append(scene)
    rooms = sorted(by_room, key=lambda r: (-len(by_room[r]), r))
    picked: list[str] = []
    while len(picked) < n and any(by_room.values()):
        for r in rooms:
            if by_room[r] and len(picked) < n:
                picked.append(by_room[r].pop(0))
    return [{"scene": s, "title": scene_title(s), "room_type": room[s], "url": url_for("pages.scene_image", scene=s)}
            for s in picked]


@bp.get("/")
def index():
    engine = current_engine()
    return render_template("index.html", types=engine.products.types, examples=_example_scenes(),
                           min_confidence=engine.embedder.preprocessing.min_confidence)


@bp.get("/products/<product_id>")
def product_page(product_id: str):
    items = current_engine().products.items_of(product_id)
    if not items:
        raise ApiError(404, f"unknown product {product_id[:80]!r}: it is not in this catalog")
    return render_template("product.html", product=product_record(items), scenes=scenes_json(product_id, 12))


@bp.get("/images/products/<product_id>")
def product_image(product_id: str):
    products = current_engine().products
    items = products.items_of(product_id)
    n = read_index(request.args.get("n"))
    if not items or not 0 <= n < len(items):
        raise ApiError(404, f"unknown product image {product_id[:80]!r} #{n}")
    return _send(products.image_path(items[n], _catalog_root()), f"product {product_id}")


@bp.get("/images/scenes/<scene>")
def scene_image(scene: str):
    scenes = current_engine().scenes
    item = next((it for it in scenes.items if it.scene == scene), None) if scenes is not None else None
    if item is None:
        raise ApiError(404, f"unknown scene {scene[:80]!r}")
    return _send(scenes.image_path(item, _catalog_root()), f"scene {scene}")


@bp.get("/healthz")
def healthz():
    return health()

"""HTML pages (upload & results, product page) and images served by id, never by a client-given path."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request, send_file

from serving.api import healthz as api_healthz
from serving.api import product_record, read_index, scenes_json
from serving.errors import ApiError
from serving.state import request_loaded

bp = Blueprint("pages", __name__)


def _engine():
    return request_loaded().engine


def _catalog_root() -> str | None:
    return current_app.config.get("SHOWROOM_CATALOG_ROOT")


def _send(path, what: str):
    if not path.is_file():  # the index is fine but the catalog's images are not where it says
        raise ApiError(404, f"the image of {what} is not on this server; set SHOWROOM_CATALOG_ROOT to the catalog folder")
    return send_file(path, max_age=3600)


@bp.get("/")
def index():
    return render_template("index.html", types=_engine().products.types)


@bp.get("/products/<product_id>")
def product_page(product_id: str):
    items = _engine().products.items_of(product_id)
    if not items:
        raise ApiError(404, f"unknown product {product_id[:80]!r}: it is not in this catalog")
    return render_template("product.html", product=product_record(items), scenes=scenes_json(product_id, 12))


@bp.get("/images/products/<product_id>")
def product_image(product_id: str):
    products = _engine().products
    items = products.items_of(product_id)
    n = read_index(request.args.get("n"))
    if not items or not 0 <= n < len(items):
        raise ApiError(404, f"unknown product image {product_id[:80]!r} #{n}")
    return _send(products.image_path(items[n], _catalog_root()), f"product {product_id}")


@bp.get("/images/scenes/<scene>")
def scene_image(scene: str):
    scenes = _engine().scenes
    item = next((it for it in scenes.items if it.scene == scene), None) if scenes is not None else None
    if item is None:
        raise ApiError(404, f"unknown scene {scene[:80]!r}")
    return _send(scenes.image_path(item, _catalog_root()), f"scene {scene}")


@bp.get("/healthz")
def healthz():
    return api_healthz()

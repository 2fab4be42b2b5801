"""HTML pages (upload & results, product page) and images served by id, never by a client-given path."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request, send_file

from serving.api import healthz as api_healthz
from serving.errors import ApiError

bp = Blueprint("pages", __name__)


def _engine():
    return current_app.extensions["showroom"].current.engine


@bp.get("/")
def index():
    return render_template("index.html", types=_engine().products.types)


@bp.get("/products/<product_id>")
def product_page(product_id: str):
    items = _engine().products.items_of(product_id)
    if not items:
        raise ApiError(404, f"unknown product {product_id!r}")
    return render_template("product.html", product=items[0])


@bp.get("/images/products/<product_id>")
def product_image(product_id: str):
    items = _engine().products.items_of(product_id)
    n = request.args.get("n", 0, type=int)
    if not items or not 0 <= n < len(items):
        raise ApiError(404, f"unknown product image {product_id!r} #{n}")
    return send_file(items[n].image, max_age=3600)


@bp.get("/images/scenes/<scene>")
def scene_image(scene: str):
    scenes = _engine().scenes
    item = next((it for it in scenes.items if it.scene == scene), None) if scenes is not None else None
    if item is None:
        raise ApiError(404, f"unknown scene {scene!r}")
    return send_file(item.image, max_age=3600)


@bp.get("/healthz")
def healthz():
    return api_healthz()

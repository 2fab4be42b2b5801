"""JSON API: detect, search, products, "where is it used?", health, reload. Per-stage timings in responses."""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import asdict

import numpy as np
from flask import Blueprint, current_app, jsonify, request, url_for

from engine.index_folder import Match
from engine.images import ImageError, check_box, decode_image
from engine.search import Timings
from serving.errors import ApiError

logger = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api")


def _state():
    return current_app.extensions["showroom"]


def read_upload(timings: Timings) -> np.ndarray:
    """The uploaded ``image`` file decoded to ``uint8 (H, W, 3)``, or a 400."""
    t = time.perf_counter()
    f = request.files.get("image")
    if f is None:
        raise ApiError(400, "no file: send the photo as multipart form field 'image'")
    data = f.read()
    if not data:
        raise ApiError(400, "empty file: the uploaded 'image' has no bytes")
    try:
        image = decode_image(data, source=f.filename or "upload")
    except ImageError as exc:
        raise ApiError(400, f"not a readable image: {exc}") from None
    timings.add("decode", t)
    return image


def read_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    raw = request.form.get("box", "").strip()
    if not raw:
        return None
    try:
        box = tuple(int(round(float(v))) for v in raw.replace(" ", "").split(","))
    except ValueError:
        raise ApiError(400, f"box {raw!r} must be four numbers x1,y1,x2,y2 in pixels") from None
    if len(box) != 4:
        raise ApiError(400, f"box {raw!r} must be four numbers x1,y1,x2,y2 in pixels")
    h, w = image.shape[:2]
    try:
        return check_box(box, w, h)
    except ImageError as exc:
        raise ApiError(400, str(exc)) from None


def read_k() -> int:
    raw = request.form.get("k") or request.args.get("k") or current_app.config["DEFAULT_K"]
    try:
        k = int(raw)
    except ValueError:
        raise ApiError(400, f"k must be a whole number, got {raw!r}") from None
    if not 1 <= k <= current_app.config["MAX_K"]:
        raise ApiError(400, f"k must be between 1 and {current_app.config['MAX_K']}")
    return k


def read_types(known: list[str]) -> set[str] | None:
    raw = [t for v in request.form.getlist("types") for t in v.split("|") if t]  # repeated fields or a|b|c
    if not raw:
        return None
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ApiError(400, f"unknown type(s) {unknown[:5]}; GET /api/types lists them")
    return set(raw)


def product_json(m: Match) -> dict:
    it = m.item
    return {"product_id": it.product_id, "name": it.name, "type": it.type, "distance": round(m.distance, 5),
            "image_url": url_for("pages.product_image", product_id=it.product_id),
            "product_url": url_for("pages.product_page", product_id=it.product_id)}


@bp.post("/detect")
def detect():
    timings = Timings()
    image = read_upload(timings)
    engine = _state().current.engine
    t = time.perf_counter()
    dets = engine.detect(image)
    timings.add("detect", t)
    h, w = image.shape[:2]
    logger.info("detect: %d objects, timings %s", len(dets), timings.stages)
    return jsonify(width=w, height=h, detections=[{"box": list(d.box), "label": d.label, "confidence": round(d.confidence, 4)} for d in dets],
                   timings_ms=timings.stages)


@bp.post("/search")
def search():
    t0 = time.perf_counter()
    timings = Timings()
    image = read_upload(timings)
    loaded = _state().current
    engine = loaded.engine
    box = read_box(image)
    k = read_k()
    types = read_types(engine.products.types)
    detections = []
    if box is None and request.form.get("detect", "1") != "0" and engine.detector is not None:
        t = time.perf_counter()
        dets = engine.detect(image)
        timings.add("detect", t)
        if dets:
            box = dets[0].box  # the most confident object
            detections = [{"box": list(d.box), "label": d.label, "confidence": round(d.confidence, 4)} for d in dets]
    matches = engine.search(image, box, k=k, types=types, timings=timings)
    timings.stages["total"] = round((time.perf_counter() - t0) * 1000.0, 2)
    logger.info("search k=%d types=%s box=%s timings %s", k, sorted(types) if types else None, box, timings.stages)
    return jsonify(box=list(box) if box else None, k=k, types=sorted(types) if types else None, detections=detections,
                   results=[product_json(m) for m in matches], timings_ms=timings.stages)


def _product_or_404(product_id: str):
    items = _state().current.engine.products.items_of(product_id)
    if not items:
        raise ApiError(404, f"unknown product {product_id!r}")
    return items


@bp.get("/products/<product_id>")
def product(product_id: str):
    items = _product_or_404(product_id)
    it = items[0]
    return jsonify(product_id=it.product_id, name=it.name, type=it.type,
                   images=[url_for("pages.product_image", product_id=product_id, n=i) for i in range(len(items))])


@bp.get("/products/<product_id>/scenes")
def product_scenes(product_id: str):
    _product_or_404(product_id)
    k = read_k()
    matches = _state().current.engine.scenes_of(product_id, k=k)
    return jsonify(product_id=product_id, scenes=[
        {"scene": m.item.scene, "box": list(m.item.box) if m.item.box else None, "label": m.item.label,
         "distance": round(m.distance, 5), "image_url": url_for("pages.scene_image", scene=m.item.scene)} for m in matches])


@bp.get("/types")
def types():
    return jsonify(types=_state().current.engine.products.types)


@bp.post("/reload")
def reload():
    token = current_app.config.get("SHOWROOM_RELOAD_TOKEN")
    if not token:
        raise ApiError(404, "reloading is off: set SHOWROOM_RELOAD_TOKEN to enable it")
    given = request.headers.get("X-Reload-Token", "")
    if not hmac.compare_digest(given, token):
        raise ApiError(403, "wrong or missing X-Reload-Token")
    try:
        loaded = _state().reload()
    except ValueError as exc:  # a damaged or mismatched index: keep serving the old one
        raise ApiError(409, f"reload refused, still serving the previous index: {exc}") from None
    return jsonify(status="reloaded", model=loaded.model_fingerprint[:12], products=len(loaded.engine.products))


@bp.get("/healthz", endpoint="healthz_api")
def healthz_api():
    return healthz()


def healthz():
    loaded = _state().current
    e = loaded.engine
    return jsonify(status="ok", model=loaded.model_fingerprint[:12], index_created=e.products.created,
                   products=len(e.products), scene_crops=len(e.scenes) if e.scenes is not None else 0,
                   index_kind=e.products.index.kind, detector=e.detector.fingerprint if e.detector is not None else None,
                   preprocessing=asdict(e.embedder.preprocessing),
                   source=loaded.source)

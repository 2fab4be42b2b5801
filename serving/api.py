"""JSON API: detect, search, products, "where is it used?", health, reload. Per-stage timings in responses."""

from __future__ import annotations

import hmac
import logging
import math
import os
import re
import time
from dataclasses import asdict

import numpy as np
from flask import Blueprint, current_app, g, jsonify, request, url_for

from engine.data.images import (
    ImageError,
    ImageShapeError,
    ImageTooLarge,
    check_box,
    decode_image,
)
from engine.index.catalog_index import Match
from engine.search import Timings
from serving.errors import ApiError
from serving.observability import request_timings
from serving.state import request_loaded

logger = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api")
WHOLE = re.compile(r"[0-9]{1,6}")  # ASCII digits only: int() would also take ' 5 ' and '٣'
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # float() also takes '١' and 'inf'


def _engine():
    return request_loaded().engine


def read_upload(timings: Timings) -> np.ndarray:
    """The uploaded ``image`` file decoded upright to ``uint8 (H, W, 3)``. Its header is checked
    against the image limits first (413 too many pixels, 422 too small or elongated), nothing decoded."""
    t = time.perf_counter()
    files = request.files.getlist("image")
    if not files:
        raise ApiError(400, "no file: send the photo as multipart form field 'image'")
    if len(files) > 1:
        raise ApiError(400, f"{len(files)} files in field 'image': send one photo per request")
    f = files[0]
    data = f.read()
    if not data:
        raise ApiError(400, "empty file: the uploaded 'image' has no bytes")
    source = "the photo"
    try:
        image = decode_image(data, source=source, limits=current_app.config["SHOWROOM_IMAGE_LIMITS"])
    except ImageTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except ImageShapeError as exc:
        raise ApiError(422, str(exc)) from None
    except ImageError as exc:
        raise ApiError(400, f"{exc}; send a JPEG, PNG, WebP or BMP photo") from None
    timings.add("decode", t)
    return image


def read_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    raw = request.form.get("box", "").strip()
    if not raw:
        return None
    bad = ApiError(400, f"box {raw[:80]!r} must be four finite numbers x1,y1,x2,y2 in pixels")
    parts = raw.replace(" ", "").split(",")
    if not all(NUMBER.fullmatch(v) for v in parts):
        raise bad
    values = [float(v) for v in parts]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise bad
    h, w = image.shape[:2]
    if any(abs(v) > 1e9 for v in values):
        raise ApiError(422, f"box {raw[:80]!r} is outside the {w}x{h} image")
    try:
        return check_box(tuple(int(round(v)) for v in values), w, h)
    except ImageError as exc:
        raise ApiError(422, str(exc)) from None


def read_k() -> int:
    raw = request.form.get("k", request.args.get("k"))
    if raw is None:
        return current_app.config["DEFAULT_K"]
    top = current_app.config["MAX_K"]
    if not WHOLE.fullmatch(raw) or not 1 <= int(raw) <= top:
        raise ApiError(400, f"k must be a whole number from 1 to {top} (digits only), got {raw[:20]!r}")
    return int(raw)


def read_index(raw: str | None) -> int:
    """A non-negative whole number given as ASCII digits (e.g. ``n``), or a 400."""
    if raw is None:
        return 0
    if not WHOLE.fullmatch(raw):
        raise ApiError(400, f"n must be a whole number (digits only), got {raw[:20]!r}")
    return int(raw)


def read_types(known: list[str]) -> set[str] | None:
    given = request.form.getlist("types")
    raw = [t for v in given for t in v.split("|") if t]  # repeated fields or a|b|c
    if not raw:
        if any(given):
            raise ApiError(400, "types names no type (only separators); GET /api/types lists them")
        return None
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ApiError(400, f"unknown type(s) {[u[:40] for u in unknown[:5]]}; GET /api/types lists them")
    return set(raw)


def similarity(distance: float) -> float:
    """A distance between unit vectors (0..2) as the cosine similarity people read as a match
    percentage: 1 - d^2 / 2, clipped to [0, 1]."""
    return round(min(1.0, max(0.0, 1.0 - distance * distance / 2.0)), 4)


def product_json(m: Match) -> dict:
    """A search result as the API returns it: ids, the catalog's fields, distance and similarity."""
    it = m.item
    products = _engine().products
    n = products.image_number(it)
    return {"product_id": it.product_id, "name": it.name, "type": it.type, "distance": round(m.distance, 5),
            "similarity": similarity(m.distance), "details": dict(it.details),
            "same_image_as": sorted({o.product_id for o in products.same_image(it)} - {it.product_id}),
            "image_url": url_for("pages.product_image", product_id=it.product_id, **({"n": n} if n else {})),
            "product_url": url_for("pages.product_page", product_id=it.product_id)}


def detections_json(dets) -> list[dict]:
    return [{"box": list(d.box), "label": d.label, "confidence": round(d.confidence, 4)} for d in dets]


@bp.post("/detect")
def detect():
    timings = request_timings()
    image = read_upload(timings)
    dets = _engine().detect(image, timings)
    h, w = image.shape[:2]
    return jsonify(width=w, height=h, detections=detections_json(dets), timings_ms=timings.stages)


@bp.post("/search")
def search():
    t0 = time.perf_counter()
    timings = request_timings()
    image = read_upload(timings)
    engine = _engine()
    box = read_box(image)
    k = read_k()
    types = read_types(engine.products.types)
    detections = []
    if box is None and request.form.get("detect", "1") != "0" and engine.detector is not None:
        dets = engine.detect(image, timings)
        if dets:
            box = dets[0].box  # the most confident object
            detections = detections_json(dets)
    matches = engine.search(image, box, k=k, types=types, timings=timings)
    timings.stages["total"] = round((time.perf_counter() - t0) * 1000.0, 2)
    h, w = image.shape[:2]
    return jsonify(width=w, height=h, box=list(box) if box else None, k=k, types=sorted(types) if types else None,
                   detections=detections, results=[product_json(m) for m in matches], timings_ms=timings.stages)


def _product_or_404(product_id: str):
    items = _engine().products.items_of(product_id)
    if not items:
        raise ApiError(404, f"unknown product {product_id[:80]!r}")
    return items


def scene_title(scene: str) -> str:
    """A readable title from a scene id: ``ikea-a-bright-kitchen__1364316015597-s4`` -> ``A bright kitchen``."""
    stem = re.sub(r"__.*$", "", scene)
    stem = re.sub(r"^ikea-", "", stem)
    words = re.sub(r"[-_]+", " ", stem).strip()
    return (words[:1].upper() + words[1:]) if words else scene


def product_record(items) -> dict:
    """A product as the API and the product page show it: ids, the catalog's fields, its images."""
    it = items[0]
    return {"product_id": it.product_id, "name": it.name, "type": it.type, "details": dict(it.details),
            "images": [url_for("pages.product_image", product_id=it.product_id, n=i) for i in range(len(items))]}


@bp.get("/products/<product_id>")
def product(product_id: str):
    return jsonify(product_record(_product_or_404(product_id)))


def scenes_json(product_id: str, k: int) -> list[dict]:
    """"Where is it used?": the scenes nearest to the product, with titles and room types."""
    return [{"scene": m.item.scene, "title": scene_title(m.item.scene), "room_type": m.item.room_type,
             "box": list(m.item.box) if m.item.box else None, "label": m.item.label,
             "distance": round(m.distance, 5), "similarity": similarity(m.distance),
             "image_url": url_for("pages.scene_image", scene=m.item.scene)} for m in _engine().scenes_of(product_id, k=k)]


@bp.get("/products/<product_id>/scenes")
def product_scenes(product_id: str):
    _product_or_404(product_id)
    return jsonify(product_id=product_id, scenes=scenes_json(product_id, read_k()))


@bp.get("/types")
def types():
    return jsonify(types=_engine().products.types)


@bp.post("/reload")
def reload():
    token = current_app.config.get("SHOWROOM_RELOAD_TOKEN")
    if not token:
        raise ApiError(404, "reloading is off: set SHOWROOM_RELOAD_TOKEN to enable it")
    given = request.headers.get("X-Reload-Token", "")
    if not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):  # bytes: any header text compares
        raise ApiError(403, "wrong or missing X-Reload-Token")
    try:
        loaded = current_app.extensions["showroom"].reload()
    except (ValueError, OSError) as exc:  # a damaged or mismatched index: keep serving the old one
        raise ApiError(409, f"reload refused, still serving the previous index: {exc}") from None
    g.loaded, g.generation = loaded, loaded.generation
    return jsonify(status="reloaded", generation=loaded.generation, model=loaded.model_fingerprint[:12],
                   products=len(loaded.engine.products), source=loaded.source)


@bp.get("/healthz", endpoint="healthz_api")
def healthz_api():
    return healthz()


def _tuning_summary(index) -> dict | None:
    """How an index was tuned (engine.index.tuning): engine chosen and why, measured recall@k and q/s."""
    t = index.tuning
    return None if t is None else {k: v for k, v in t.items() if k != "trees"}


def healthz():
    loaded = request_loaded()
    e = loaded.engine
    root = current_app.config.get("SHOWROOM_CATALOG_ROOT") or e.products.catalog_root
    return jsonify(status="ok", generation=loaded.generation, pid=os.getpid(), model=loaded.model_fingerprint[:12], index_created=e.products.created,
                   catalog_root=root, catalog_images_found=bool(len(e.products)) and e.products.image_path(e.products.items[0], root).is_file(),
                   products=len(e.products), scene_crops=len(e.scenes) if e.scenes is not None else 0,
                   index_kind=e.products.index.kind, detector=e.detector.fingerprint if e.detector is not None else None,
                   index_tuning={name: _tuning_summary(ix) for name, ix in (("products", e.products), ("scenes", e.scenes)) if ix is not None},
                   preprocessing=asdict(e.embedder.preprocessing),
                   source=loaded.source)

"""JSON API: detect, search, products, "where is it used?", health, reload. Per-stage timings in responses."""

from __future__ import annotations

import hmac
import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flask import Blueprint, current_app, g, jsonify, request, url_for

from engine.data.images import (
    ImageError,
    ImageShapeError,
    ImageTooLarge,
    Box,
    check_box,
    check_limits,
    decode_image,
    jpeg_reduction,
    read_header,
)
from engine.index.catalog_index import Match
from engine.search import Timings
from serving.budget import BudgetBusy
from serving.errors import ApiError
from serving.observability import request_timings
from serving.records import WHOLE, current_engine, health, product_record, scenes_json, similarity

logger = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api")
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # float() also takes '١' and 'inf'


@dataclass(frozen=True)
class Upload:
    """An uploaded photo: ``image`` decoded upright, ``uint8 (h, w, 3)``, and the photo's own upright
    ``width`` x ``height``, which every box and point of the API is in. They differ only for a JPEG
    decoded smaller (``engine.data.images.jpeg_reduction``); ``to_photo`` and ``to_image`` convert."""

    image: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> tuple[float, float]:
        """(photo pixels per image pixel) across and down; (1, 1) when decoded whole."""
        h, w = self.image.shape[:2]
        return self.width / w, self.height / h

    def to_photo(self, box: Box) -> list[int]:
        """An image-pixel box in the photo's pixels (for answers)."""
        sx, sy = self.scale
        if (sx, sy) == (1.0, 1.0):
            return list(box)
        x1, y1, x2, y2 = box
        return [int(x1 * sx), int(y1 * sy), min(self.width, math.ceil(x2 * sx)), min(self.height, math.ceil(y2 * sy))]

    def to_image(self, box: Box) -> Box:
        """A photo-pixel box (checked against the photo) in the decoded image's pixels."""
        sx, sy = self.scale
        if (sx, sy) == (1.0, 1.0):
            return box
        h, w = self.image.shape[:2]
        x1, y1, x2, y2 = box
        return int(x1 / sx), int(y1 / sy), max(int(x1 / sx) + 1, min(w, math.ceil(x2 / sx))), max(int(y1 / sy) + 1, min(h, math.ceil(y2 / sy)))


def read_upload(timings: Timings) -> Upload:
    """The uploaded ``image`` file decoded upright. Its header is checked against the image limits
    first (413 too many pixels, 422 too small or elongated), nothing decoded; a JPEG whose long side
    is at least twice ``SHOWROOM_DECODE_LONG_SIDE`` is decoded 2, 4 or 8 times smaller by libjpeg."""
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
    limits = current_app.config["SHOWROOM_IMAGE_LIMITS"]
    try:
        header = read_header(data, source=source)
        check_limits(header, limits, source=source)
        factor = jpeg_reduction(header, current_app.config["SHOWROOM_DECODE_LONG_SIDE"])
        reserve_decode(header.reduced(factor).decode_cost)  # held until the answer is made: the decoded photo lives that long
        image = decode_image(data, source=source, reduce=factor, header=header)
    except ImageTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except ImageShapeError as exc:
        raise ApiError(422, str(exc)) from None
    except ImageError as exc:
        raise ApiError(400, f"{exc}; send a JPEG, PNG, WebP or BMP photo") from None
    timings.add("decode", t)
    width, height = header.upright_size
    return Upload(image, width, height)


def reserve_decode(cost: int) -> None:
    """Reserve ``cost`` bytes of this worker's decode budget for the rest of the request (given back
    by ``release_decode``), or a 503 with ``Retry-After`` when it stays full."""
    budget = current_app.extensions.get("showroom_decode_budget")
    if budget is None:
        return
    try:
        g.decode_reserved = g.get("decode_reserved", 0) + budget.reserve(cost)
    except BudgetBusy as exc:
        raise ApiError(503, f"busy decoding other large photos ({exc}); try again in a moment", {"Retry-After": "2"}) from None


@bp.teardown_app_request
def release_decode(_exc: BaseException | None = None) -> None:
    reserved = g.pop("decode_reserved", 0)
    budget = current_app.extensions.get("showroom_decode_budget")
    if reserved and budget is not None:
        budget.release(reserved)


def read_box(upload: Upload) -> Box | None:
    """The optional ``box=x1,y1,x2,y2`` in the photo's pixels, checked against it and returned in the
    decoded image's pixels, or a 400 / 422."""
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
    w, h = upload.width, upload.height
    if any(abs(v) > 1e9 for v in values):
        raise ApiError(422, f"box {raw[:80]!r} is outside the {w}x{h} image")
    try:
        return upload.to_image(check_box(tuple(int(round(v)) for v in values), w, h))
    except ImageError as exc:
        raise ApiError(422, str(exc)) from None


def read_k(default: int | None = None) -> int:
    """``k`` of the form or query string (1..MAX_K), else ``default`` (else DEFAULT_K)."""
    raw = request.form.get("k", request.args.get("k"))
    if raw is None:
        return default or current_app.config["DEFAULT_K"]
    top = current_app.config["MAX_K"]
    if not WHOLE.fullmatch(raw) or not 1 <= int(raw) <= top:
        raise ApiError(400, f"k must be a whole number from 1 to {top} (digits only), got {raw[:20]!r}")
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


def read_group(engine) -> str | None:
    """The optional ``group`` a search is kept to: a product group of the engine (``""`` or ``all``:
    the whole catalog), None when the form does not say; a 400 for a group the engine does not know."""
    raw = request.form.get("group")
    if raw is None:
        return None
    raw = raw.strip()
    if raw in ("", "all"):
        return ""
    try:
        engine.types_of_group(raw)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return raw


def product_json(m: Match, probability: float | None = None) -> dict:
    """A search result as the API returns it: ids, the catalog's fields, distance, similarity, when the
    served generation is calibrated the probability that it is the query's own product, and when the
    engine corrects hub products (``SHOWROOM_HUB_BETA``) ``hub_score``, the corrected distance the
    results are ordered by."""
    it = m.item
    engine = current_engine()
    products = engine.products
    n = products.image_number(it)
    return {"product_id": it.product_id, "name": it.name, "type": it.type, "distance": round(m.distance, 5),
            "similarity": similarity(m.distance), **({} if probability is None else {"same_product_probability": round(probability, 4)}),
            **({} if engine.hubness is None else {"hub_score": round(engine.hubness.score(m), 5)}),
            "details": dict(it.details),
            "same_image_as": sorted({o.product_id for o in products.same_image(it)} - {it.product_id}),
            "image_url": url_for("pages.product_image", product_id=it.product_id, **({"n": n} if n else {})),
            "product_url": url_for("pages.product_page", product_id=it.product_id)}


def results_json(engine, matches) -> dict:
    """``results`` (best first) and the verdict on them: ``close_match`` (the best result's calibrated
    probability at or above the threshold; None when the generation has no calibration) and, when it
    is not, ``verdict`` "no close match in the catalog": the results are similar products, not this one."""
    probs, close = engine.judge(matches)
    out = {"results": [product_json(m, None if probs is None else p) for m, p in zip(matches, probs or [None] * len(matches))],
           "close_match": close}
    if close is False:
        out["verdict"] = "no close match in the catalog"
    return out


def detections_json(dets, upload: Upload) -> list[dict]:
    return [{"box": upload.to_photo(d.box), "label": d.label, "confidence": round(d.confidence, 4)} for d in dets]


@bp.post("/detect")
def detect():
    timings = request_timings()
    upload = read_upload(timings)
    dets = current_engine().detect(upload.image, timings)
    return jsonify(width=upload.width, height=upload.height, detections=detections_json(dets, upload), timings_ms=timings.stages)


def read_point(upload: Upload) -> tuple[float, float] | None:
    """The optional ``point=x,y`` of a tap on the photo, in the photo's pixels, returned in the
    decoded image's pixels, or a 400 / 422."""
    raw = request.form.get("point", "").strip()
    if not raw:
        return None
    parts = raw.replace(" ", "").split(",")
    if len(parts) != 2 or not all(NUMBER.fullmatch(v) for v in parts) or not all(math.isfinite(float(v)) for v in parts):
        raise ApiError(400, f"point {raw[:80]!r} must be two finite numbers x,y in pixels")
    x, y = (float(v) for v in parts)
    w, h = upload.width, upload.height
    if not (0 <= x < w and 0 <= y < h):
        raise ApiError(422, f"point {raw[:80]!r} is outside the {w}x{h} image")
    sx, sy = upload.scale
    return x / sx, y / sy


@bp.post("/search")
def search():
    t0 = time.perf_counter()
    timings = request_timings()
    upload = read_upload(timings)
    image = upload.image
    engine = current_engine()
    box = read_box(upload)
    point = read_point(upload)
    if box is not None and point is not None:
        raise ApiError(400, "send either box or point, not both")
    k = read_k()
    types = read_types(engine.products.types)
    group = read_group(engine)
    detections = []
    label = None
    if point is not None:  # a tap: the region the engine proposes under it
        box, label = engine.region_at(image, *point, timings=timings)
    elif box is None and request.form.get("detect", "1") != "0" and engine.detector is not None:
        dets = engine.detect(image, timings)
        if dets:
            box = dets[0].box  # the most confident object
            detections = detections_json(dets, upload)
    if group is None:  # not said: a tap searches within its region's group (as the room list does), a box everything
        group = engine.label_groups.get(label, "") if label else ""
    in_group = group if group and not types else None  # the shopper's own types win over a group
    scope = types if types else (engine.types_of_group(group) if group else None)
    matches = engine.search(image, box, k=k, types=scope, timings=timings)
    timings.stages["total"] = round((time.perf_counter() - t0) * 1000.0, 2)
    extra = {} if label is None else {"label": label, "group": engine.label_groups.get(label, "")}
    return jsonify(width=upload.width, height=upload.height, box=upload.to_photo(box) if box else None, k=k, types=sorted(types) if types else None,
                   in_group=in_group, detections=detections, **results_json(engine, matches), timings_ms=timings.stages, **extra)


@bp.post("/room")
def room():
    """"Shop this room": every object the engine proposes (its box, detector label, product group,
    confidence and whether it is sure), each with its ``k`` best matches among its group, and the
    room's one ranked list of products."""
    t0 = time.perf_counter()
    timings = request_timings()
    upload = read_upload(timings)
    engine = current_engine()
    k = read_k(current_app.config["ROOM_K"])
    found = engine.room(upload.image, k=k, timings=timings)
    timings.stages["total"] = round((time.perf_counter() - t0) * 1000.0, 2)
    objects = [{"box": upload.to_photo(o.box), "label": o.label, "group": o.group, "confidence": round(o.confidence, 4), "sure": o.sure,
                **results_json(engine, o.matches)} for o in found.objects]
    return jsonify(width=upload.width, height=upload.height, k=k, objects=objects, products=list(found.products), timings_ms=timings.stages)


def _product_or_404(product_id: str):
    items = current_engine().products.items_of(product_id)
    if not items:
        raise ApiError(404, f"unknown product {product_id[:80]!r}")
    return items


@bp.get("/products/<product_id>")
def product(product_id: str):
    return jsonify(product_record(_product_or_404(product_id)))


@bp.get("/products/<product_id>/scenes")
def product_scenes(product_id: str):
    _product_or_404(product_id)
    return jsonify(product_id=product_id, scenes=scenes_json(product_id, read_k()))


@bp.get("/types")
def types():
    return jsonify(types=current_engine().products.types)


def _operator(what: str) -> None:
    """The operators' endpoints (reload, catalog updates): off without ``SHOWROOM_RELOAD_TOKEN`` (404),
    403 without its value in ``X-Reload-Token``."""
    token = current_app.config.get("SHOWROOM_RELOAD_TOKEN")
    if not token:
        raise ApiError(404, f"{what} is off: set SHOWROOM_RELOAD_TOKEN to enable it")
    given = request.headers.get("X-Reload-Token", "")
    if not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):  # bytes: any header text compares
        raise ApiError(403, "wrong or missing X-Reload-Token")


def _reloaded():
    try:
        loaded = current_app.extensions["showroom"].reload()
    except (ValueError, OSError) as exc:  # a damaged or mismatched index: keep serving the old one
        raise ApiError(409, f"reload refused, still serving the previous index: {exc}") from None
    g.loaded, g.generation = loaded, loaded.generation
    return loaded


@bp.post("/reload")
def reload():
    _operator("reloading")
    loaded = _reloaded()
    return jsonify(status="reloaded", generation=loaded.generation, model=loaded.model_fingerprint[:12],
                   products=len(loaded.engine.products), source=loaded.source)


@bp.post("/catalog")
def catalog_update():
    """Products added, updated or removed, published as the serving folder's next generation and
    served (``serving.catalog_update``; the same as ``build_index --add/--update/--remove``). Multipart:
    ``add`` / ``update`` files in products.csv's format whose ``image`` column names uploaded ``photo``
    files, ``remove`` comma-separated product ids; optionally ``views``, the in-room views of those
    products (``training.synthesize --only``'s manifest.json) with their ``view`` image files, blended
    into their vectors at the weight the index blends at (``build_index --add --views``)."""
    from engine.data.catalog import CatalogError
    from engine.index.delta import CatalogDelta, DeltaError
    from engine.index.generations import ServingFolderError, resolve_serving_folder
    from engine.model.embedder import Embedder
    from engine.index.catalog_index import read_manifest
    from engine.index.views import DEFAULT_WEIGHT
    from serving.catalog_update import BackgroundCompactor, publish_delta, stage_photos, stage_views

    _operator("updating the catalog")
    served = current_app.extensions["showroom"].served
    folder = Path(served.source).parent
    if not (folder / "CURRENT").is_file():
        raise ApiError(409, f"{served.source} is not a generation of a serving folder (a registered model?): catalog updates "
                            "need one built by python -m serving.build_index --out DIR")
    tables = {what: request.files[what].read() for what in ("add", "update") if what in request.files}
    photos: dict[str, bytes] = {}
    for f in request.files.getlist("photo"):
        if f.filename in photos:
            raise ApiError(400, f"two uploaded photos are named {f.filename!r}")
        photos[f.filename or ""] = f.read()
    remove = tuple(dict.fromkeys(t.strip() for t in request.form.get("remove", "").split(",") if t.strip()))
    if not tables and not remove:
        raise ApiError(400, "nothing to change: send 'add' or 'update' (products.csv rows, with their 'photo' files) or 'remove' (ids)")
    view_files: dict[str, bytes] = {}
    for f in request.files.getlist("view"):
        if f.filename in view_files:
            raise ApiError(400, f"two uploaded view files are named {f.filename!r}")
        view_files[f.filename or ""] = f.read()
    manifest = request.files.get("views")
    if (manifest is not None or view_files) and not tables:
        raise ApiError(400, "in-room views ('views', 'view') blend the products 'add' or 'update' bring: send one of them")
    if view_files and manifest is None:
        raise ApiError(400, "'view' files without the 'views' manifest that names them (training.synthesize --only's manifest.json)")
    limits = current_app.config["SHOWROOM_IMAGE_LIMITS"]
    try:
        rows, added = stage_photos(folder, tables, photos, limits=limits)
    except CatalogError as exc:
        raise ApiError(400, f"catalog not changed: {exc}") from None
    embedder = served.engine.embedder
    with tempfile.TemporaryDirectory(prefix="showroom-views-") as views_tmp:
        try:
            views = None
            if manifest is not None:  # at the weight the index blends at (a full build's default when it blends none)
                built = (read_manifest(resolve_serving_folder(folder) / "products").get("embedded_by") or {}).get("views")
                views = stage_views(Path(views_tmp), manifest.read(), view_files, rows.get("add", ()) + rows.get("update", ()),
                                    float(built["weight"]) if built else DEFAULT_WEIGHT, manifest_name=(manifest.filename or "views")[:100],
                                    limits=limits)
            delta = CatalogDelta(add=rows.get("add", ()), update=rows.get("update", ()), remove=remove, views=views)
            generation, report = publish_delta(  # never compacted here: a request's work is bounded by its own rows
                folder, delta, lambda current, model: embedder if model == served.model_fingerprint else Embedder.load(current / "model.keras"),
                compact_above=math.inf)
        except (CatalogError, DeltaError, ServingFolderError) as exc:  # bad views; an id that does not fit; another build writing now
            for path in added:  # nothing of a refused update is kept
                path.unlink(missing_ok=True)
            status = 400 if isinstance(exc, CatalogError) else 409
            headers = {"Retry-After": "5"} if isinstance(exc, ServingFolderError) else None
            raise ApiError(status, f"catalog not changed: {exc}", headers) from None
    loaded = _reloaded()
    logger.info("catalog update: %s -> %s (+%d ~%d -%d products)", report["source"], generation.name, report["products_added"],
                report["products_updated"], report["products_removed"])
    compactor = current_app.extensions.get("showroom_compactor")
    if compactor is None or compactor.folder != folder:
        state = current_app.extensions["showroom"]
        compactor = current_app.extensions["showroom_compactor"] = BackgroundCompactor(folder, state.reload)
    return jsonify(status="updated", generation=loaded.generation, products=len(loaded.engine.products), source=loaded.source,
                   report={k: report[k] for k in ("products_added", "products_updated", "products_removed", "rows_before", "rows_after",
                                                  "embedded", "reused", "method", "recall", "views", "without_views")},
                   compaction=compactor.request())


@bp.get("/healthz", endpoint="healthz_api")
def healthz_api():
    return health()

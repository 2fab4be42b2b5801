"""What the JSON API and the HTML pages both show: the request's engine, product and scene records,
the health report, and whole numbers read from the query string."""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from dataclasses import asdict

from flask import current_app, jsonify, request, url_for

from serving.errors import ApiError
from serving.state import request_loaded

WHOLE = re.compile(r"[0-9]{1,6}")  # ASCII digits only: int() would also take ' 5 ' and '٣'


def current_engine():
    """The search engine of the index generation this request is served from."""
    return request_loaded().engine


def read_index(raw: str | None) -> int:
    """A non-negative whole number given as ASCII digits (e.g. ``n``), or a 400."""
    if raw is None:
        return 0
    if not WHOLE.fullmatch(raw):
        raise ApiError(400, f"n must be a whole number (digits only), got {raw[:20]!r}")
    return int(raw)


def similarity(distance: float) -> float:
    """A distance between unit vectors (0..2) as the cosine similarity people read as a match
    percentage: 1 - d^2 / 2, clipped to [0, 1]."""
    return round(min(1.0, max(0.0, 1.0 - distance * distance / 2.0)), 4)


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


def scenes_json(product_id: str, k: int) -> list[dict]:
    """"Where is it used?": the scenes nearest to the product, with titles and room types."""
    return [{"scene": m.item.scene, "title": scene_title(m.item.scene), "room_type": m.item.room_type,
             "box": list(m.item.box) if m.item.box else None, "label": m.item.label,
             "distance": round(m.distance, 5), "similarity": similarity(m.distance),
             "image_url": url_for("pages.scene_image", scene=m.item.scene)} for m in current_engine().scenes_of(product_id, k=k)]


def _tuning_summary(index) -> dict | None:
    """How an index was tuned (engine.index.tuning): engine chosen and why, measured recall@k and q/s."""
    t = index.tuning
    return None if t is None else {k: v for k, v in t.items() if k != "trees"}


def trusted_caller() -> bool:
    """A caller who may see the service's internals: on this machine (loopback, after any trusted
    proxy hops), or holding the reload token."""
    addr = request.remote_addr or ""
    try:
        if ipaddress.ip_address(addr.split("%", 1)[0]).is_loopback:
            return True
    except ValueError:
        pass
    token = current_app.config.get("SHOWROOM_RELOAD_TOKEN")
    given = request.headers.get("X-Reload-Token", "")
    return bool(token) and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def health():
    """``/healthz`` and ``/api/healthz``: ``status`` ("ok", or "degraded" while this worker serves an
    older generation than the published one) and the generation number to anyone; to a trusted
    caller (``trusted_caller``) also what is served: model, index, folders, catalog images, detector,
    process id and why it is degraded."""
    loaded = request_loaded()
    status = "degraded" if loaded.degraded else "ok"
    if not trusted_caller():
        return jsonify(status=status, generation=loaded.generation)
    e = loaded.engine
    root = current_app.config.get("SHOWROOM_CATALOG_ROOT") or e.products.catalog_root
    return jsonify(status=status, degraded=loaded.degraded or None,
                   generation=loaded.generation, pid=os.getpid(), model=loaded.model_fingerprint[:12], index_created=e.products.created,
                   catalog_root=root, catalog_images_found=bool(len(e.products)) and e.products.image_path(e.products.items[0], root).is_file(),
                   products=len(e.products), scene_crops=len(e.scenes) if e.scenes is not None else 0,
                   index_kind=e.products.index.kind, detector=e.detector.fingerprint if e.detector is not None else None,
                   index_tuning={name: _tuning_summary(ix) for name, ix in (("products", e.products), ("scenes", e.scenes)) if ix is not None},
                   preprocessing=asdict(e.embedder.preprocessing),
                   source=loaded.source)

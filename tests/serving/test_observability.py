"""Log lines, /metrics, rate limits, security headers and error pages, through the test client."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest


def jpeg(h: int = 120, w: int = 160) -> bytes:
    return cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))[1].tobytes()


def search(client, **form):
    return client.post("/api/search", data={"image": (io.BytesIO(jpeg()), "p.jpg"), **form}, content_type="multipart/form-data")


def test_one_json_log_line_per_request_with_stages_and_generation(client, caplog):
    with caplog.at_level(logging.INFO, logger="serving.requests"):
        assert search(client, k="3").status_code == 200
        assert client.get("/api/products/nope").status_code == 404
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "serving.requests"]
    assert [line["status"] for line in lines] == [200, 404]
    first = lines[0]
    assert first["route"] == "/api/search" and first["method"] == "POST" and first["generation"] == 1
    assert {"decode", "detect_wait", "detect", "embed", "search"} <= set(first["stages_ms"]) and first["ms"] > 0
    assert lines[1]["route"] == "/api/products/<product_id>"


def test_queue_wait_from_a_proxy_header(client, caplog):
    with caplog.at_level(logging.INFO, logger="serving.requests"):
        client.get("/api/types", headers={"X-Request-Start": f"t={time.time() - 0.25:.3f}"})
    line = json.loads(next(r.getMessage() for r in caplog.records if r.name == "serving.requests"))
    assert 200 <= line["stages_ms"]["queue"] < 5000


def test_metrics_count_requests_stages_and_errors(client):
    search(client, k="3")
    client.get("/api/products/nope")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'showroom_requests_total{method="POST",route="/api/search",status="200"} 1.0' in text
    assert 'showroom_errors_total{route="/api/products/<product_id>",status="404"} 1.0' in text
    assert 'showroom_stage_seconds_count{stage="detect_wait"} 1.0' in text
    assert 'showroom_request_seconds_bucket{le="+Inf",route="/api/search"} 1.0' in text
    assert "showroom_index_generation 1.0" in text


def test_metrics_exposition_parses_with_one_charset(client):
    from prometheus_client.parser import text_string_to_metric_families

    search(client, k="3")
    r = client.get("/metrics")
    params = [p.strip().split("=")[0] for p in r.headers["Content-Type"].split(";")[1:]]
    assert r.mimetype == "text/plain" and sorted(params) == ["charset", "version"]  # each parameter once
    families = {f.name: f for f in text_string_to_metric_families(r.get_data(as_text=True))}
    assert {"showroom_requests", "showroom_request_seconds", "showroom_index_generation"} <= set(families)
    assert any(s.labels.get("route") == "/api/search" and s.value == 1.0 for s in families["showroom_requests"].samples)


def test_security_headers_on_pages_api_and_errors(client):
    for url in ("/", "/api/types", "/api/products/nope", "/static/showroom.js"):
        r = client.get(url)
        assert "default-src 'self'" in r.headers["Content-Security-Policy"] and r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Showroom-Generation"] == "1"


def test_rate_limit_per_client_on_search_only(index_folder: Path, caplog):
    from serving import create_app

    app = create_app({"SHOWROOM_INDEX": str(index_folder), "TESTING": True, "SHOWROOM_RATE_LIMIT": "2 per minute"})
    c = app.test_client()
    assert [search(c, k="2").status_code for _ in range(3)] == [200, 200, 429]
    with caplog.at_level(logging.INFO, logger="serving.requests"):
        r = search(c, k="2")
    assert "too many requests" in r.get_json()["error"] and int(r.headers["Retry-After"]) > 0
    assert r.headers["X-Showroom-Generation"] == "1"  # a refused request is stamped, timed and logged like any other
    line = json.loads(next(x.getMessage() for x in caplog.records if x.name == "serving.requests"))
    assert line["status"] == 429 and line["generation"] == 1 and line["ms"] > 0
    other = app.test_client()
    assert other.post("/api/search", data={"image": (io.BytesIO(jpeg()), "p.jpg"), "k": "2"}, content_type="multipart/form-data",
                      environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 200  # another client has its own budget
    assert all(c.get("/api/types").status_code == 200 for _ in range(5))  # browsing is not limited


@pytest.mark.parametrize("url", ["/products/nope", "/no/such/page", "/images/products/nope"])
def test_browsers_get_an_html_error_page_programs_json(client, url):
    page = client.get(url, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Back to search" in page.get_data(as_text=True)
    assert client.get(url).get_json()["error"]
    api = client.get("/api/products/nope", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.get_json()["error"]


def test_an_unexpected_error_is_a_500_that_names_no_internals(app, client, monkeypatch):
    engine = app.extensions["showroom"].current.engine

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(type(engine), "search", broken)
    r = search(client, box="0,0,50,50")
    assert r.status_code == 500 and "secret" not in r.get_data(as_text=True) and r.get_json()["error"]

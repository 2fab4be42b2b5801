"""Per-request log lines, Prometheus metrics, per-client rate limits and security headers.

- One JSON log line per request on the ``serving.requests`` logger: route, method, status,
  milliseconds in total and per stage (``detect_wait`` is the wait for the detector, apart from
  ``detect``; ``queue`` is the time since a proxy's ``X-Request-Start: t=<epoch seconds>``), the
  index generation, and the client address.
- ``GET /metrics``: request counts by route and status, latency histograms per route and per
  stage, the served generation (``prometheus_client``). Under gunicorn, set
  ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder so the numbers add up over all workers.
- Rate limits on the search endpoints, per client address (``Flask-Limiter``, fixed windows):
  ``SHOWROOM_RATE_LIMIT`` (empty: off), counted in ``SHOWROOM_RATE_LIMIT_STORAGE``: under
  gunicorn by default a ``showroom-sqlite://`` file shared by the server's workers
  (``serving.ratelimit``), so a client gets the configured number whatever the worker count;
  ``memory://`` in a single process (or to count per worker); ``redis://...`` to share it between
  servers.
- Security headers on every response (CSP, ``X-Content-Type-Options``, frame and referrer policy).
"""

from __future__ import annotations

import json
import logging
import os
import time

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from engine.search import Timings
from serving.ratelimit import STRATEGY  # importing serving.ratelimit registers its showroom-sqlite:// storage with limits

request_log = logging.getLogger("serving.requests")

LIMITED_ENDPOINTS = frozenset({"api.search", "api.detect", "api.room"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("showroom_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("showroom_request_seconds", "Request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.stages = Histogram("showroom_stage_seconds", "Time per query stage (detect_wait is queueing for the detector)",
                                ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("showroom_errors", "Responses with a 4xx or 5xx status by route and status",
                              ["route", "status"], registry=self.registry)
        self.generation = Gauge("showroom_index_generation", "The index generation this worker serves",
                                registry=self.registry, multiprocess_mode="max")
        self.degraded = Gauge("showroom_degraded", "1 while a worker serves an older generation because the published one "
                              "does not load there (see /healthz)", registry=self.registry, multiprocess_mode="max")

    def exposition(self) -> bytes:
        """The text format, summed over all workers when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def request_timings() -> Timings:
    """The stage timings of the current request (filled by the views, logged and measured after)."""
    if "timings" not in g:
        g.timings = Timings()
    return g.timings


def install(app: Flask, served_of) -> Limiter:
    """Wire logging, metrics, rate limits and headers into ``app``; ``served_of()`` is what the
    current request is answered from (its ``generation`` number and ``degraded`` reason, "" if none)."""
    metrics = Metrics()
    app.extensions["showroom_metrics"] = metrics

    @app.before_request  # registered before the limiter's own check, so a 429 is timed, logged and stamped too
    def _start() -> None:
        g.t0 = time.perf_counter()
        served = served_of()  # also makes this worker notice a reload published by another
        # one snapshot per request: the answer, its header and its log line name the same generation
        g.loaded, g.generation, g.degraded = served, served.generation, bool(served.degraded)
        start = request.headers.get("X-Request-Start", "")
        if start.startswith("t="):
            try:
                request_timings().stages["queue"] = round(max(0.0, time.time() - float(start[2:])) * 1000.0, 2)
            except ValueError:
                pass

    limit = app.config.get("SHOWROOM_RATE_LIMIT") or ""
    limiter = Limiter(get_remote_address, app=app, default_limits=[limit] if limit else [],
                      default_limits_exempt_when=lambda: request.endpoint not in LIMITED_ENDPOINTS,
                      storage_uri=app.config.get("SHOWROOM_RATE_LIMIT_STORAGE") or "memory://",
                      strategy=STRATEGY, headers_enabled=True, enabled=bool(limit),
                      swallow_errors=True)  # a store that fails (locked past its timeout, disk full) lets the request through, logged

    @app.after_request
    def _finish(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        generation = g.get("generation")
        if generation is not None:
            response.headers["X-Showroom-Generation"] = str(generation)
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        seconds = time.perf_counter() - g.get("t0", time.perf_counter())
        stages = request_timings().stages
        metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(seconds)
        for stage, ms in stages.items():
            if stage not in ("total", "queue"):
                metrics.stages.labels(stage).observe(ms / 1000.0)
        if response.status_code >= 400:
            metrics.errors.labels(route, str(response.status_code)).inc()
        if generation is not None:
            metrics.generation.set(generation)
            metrics.degraded.set(1 if g.get("degraded") else 0)
        if route != "/metrics":
            request_log.info(json.dumps({
                "route": route, "method": request.method, "status": response.status_code, "ms": round(seconds * 1000.0, 2),
                "stages_ms": stages, "generation": generation, "client": request.remote_addr,
            }, separators=(",", ":")))
        return response

    @app.get("/metrics")
    def _metrics() -> Response:
        # content_type, not mimetype: Flask would append a second "charset" to CONTENT_TYPE_LATEST's own,
        # a duplicated parameter that strict scrapers (Prometheus 3's parser) refuse
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    return limiter

"""The service's client errors and how every error is answered: JSON for the API and for programs,
an HTML page for a browser, never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

logger = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/healthz", "/metrics")


class ApiError(Exception):
    """A client error answered as JSON ``{"error": message}`` (or an HTML page to a browser) with a 4xx status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


def wants_html() -> bool:
    """A browser asking for a page (not the JSON API): it prefers text/html over JSON."""
    if request.path.startswith(JSON_PREFIXES):
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and request.accept_mimetypes[best] > request.accept_mimetypes["application/json"]


def error_response(status: int, message: str):
    """The answer to any error: ``{"error": message}``, or the error page for a browser."""
    if wants_html():
        return render_template("error.html", status=status, message=message), status
    return jsonify(error=message), status


def register_error_handlers(app: Flask) -> None:
    """Every error a client can cause becomes a 4xx with a message saying what to fix; anything
    else a 500 that names no internals (and is logged with its traceback)."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        body, status = error_response(exc.status, exc.message)
        return body, status, exc.headers

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc):
        limit = app.config["MAX_CONTENT_LENGTH"]
        length = request.content_length
        if length is not None and length <= limit:  # not the size: Werkzeug's cap on a form's parts or memory
            parts, memory = app.config.get("MAX_FORM_PARTS"), app.config.get("MAX_FORM_MEMORY_SIZE")
            return error_response(413, f"the form is too large in parts, not bytes: over {parts} parts, or a text field over "
                                       f"{memory} bytes; send one 'image' file and a few short fields")
        # the body is not read here: serving.bodies drains it after the answer, so the client reads this 413
        return error_response(413, f"upload too large: the limit is {limit / (1024 * 1024):.3g} MB; send a smaller photo")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 405:
            message = f"{request.method} is not allowed on {request.path}; allowed: {', '.join(sorted(exc.valid_methods or []))}"
        elif exc.code == 404 and request.endpoint is None:
            message = f"no such page or endpoint: {request.path[:200]}"
        elif exc.code == 429:
            message = f"too many requests from your address ({exc.description}); wait a moment and try again"
        return error_response(exc.code or 500, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal error: the request was not completed (it is logged); please try again")

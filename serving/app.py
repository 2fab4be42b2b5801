"""``create_app``: the Flask factory. Model, detector and indexes load once here, never per request.

Configuration (``test_config`` or environment):
- ``SHOWROOM_INDEX``: folder written by ``python -m serving.build_index`` (model + indexes), or a
  registered version such as ``models:/showroom@champion`` (``python -m evaluation.promote``),
  resolved again on every reload.
- ``SHOWROOM_DETECTOR_WEIGHTS``: YOLO weights for detecting products in uploads (none: no detection).
- ``MAX_CONTENT_LENGTH``: upload limit in bytes (default 10 MB).
- ``SHOWROOM_RELOAD_TOKEN``: enables ``POST /api/reload`` for clients that send it (no default secret).
- ``SHOWROOM_DETECTOR``: a ready ``Detector`` object (tests inject one); overrides the weights.
- ``SHOWROOM_STATE``: a ready ``ServingState`` (tests inject one).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from detectors.category_map import load_category_map
from detectors.yolo import YoloDetector
from engine.config import Preprocessing
from engine.runtime import configure_runtime
from serving.api import bp as api_bp
from serving.errors import ApiError
from serving.pages import bp as pages_bp
from serving.state import ServingState, load_from_folder
from training.model_ref import is_registered, resolve_model

logger = logging.getLogger(__name__)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    configure_runtime()
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=int(os.environ.get("SHOWROOM_MAX_UPLOAD", 10 * 1024 * 1024)),
        SHOWROOM_INDEX=os.environ.get("SHOWROOM_INDEX"),
        SHOWROOM_DETECTOR_WEIGHTS=os.environ.get("SHOWROOM_DETECTOR_WEIGHTS"),
        SHOWROOM_RELOAD_TOKEN=os.environ.get("SHOWROOM_RELOAD_TOKEN"),
        SHOWROOM_STATE=None,
        SHOWROOM_DETECTOR=None,
        DEFAULT_K=12,
        MAX_K=100,
    )
    if test_config:
        app.config.update(test_config)
    state = app.config["SHOWROOM_STATE"]
    if state is None:
        state = _load_state(app)
    app.extensions["showroom"] = state

    app.register_blueprint(api_bp)
    app.register_blueprint(pages_bp)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return jsonify(error=exc.message), exc.status

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc):
        limit = app.config["MAX_CONTENT_LENGTH"]
        return jsonify(error=f"upload too large: the limit is {limit // (1024 * 1024)} MB"), 413

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        return jsonify(error=exc.description), exc.code

    return app


def _load_state(app: Flask) -> ServingState:
    folder = app.config["SHOWROOM_INDEX"]
    if not folder:
        raise RuntimeError("set SHOWROOM_INDEX to a folder built by `python -m serving.build_index`")
    detector = app.config["SHOWROOM_DETECTOR"]
    if detector is None and app.config["SHOWROOM_DETECTOR_WEIGHTS"]:
        # low enough for any model's fill-in threshold; each model filters by its own preprocessing
        detector = YoloDetector(app.config["SHOWROOM_DETECTOR_WEIGHTS"], conf=Preprocessing().detector_confidence)
        detector.class_names  # load now, not on the first request

    def loader():
        local = folder
        if is_registered(str(folder)):  # a registered version: re-resolved on every reload
            local = resolve_model(str(folder)).folder
            if not (local / "products").is_dir():
                raise RuntimeError(f"{folder} holds a model without indexes (its run had no index/ artifact): build a folder with "
                                   f"`python -m serving.build_index --model {folder} --catalog DIR --out DIR` and serve that")
        return load_from_folder(local, detector, frozenset(load_category_map().classes))

    return ServingState(loader(), loader)

"""``create_app``: the Flask factory. Model, detector and indexes load once here, never per request.

Configuration (``test_config`` or environment):
- ``SHOWROOM_INDEX``: serving folder written by ``python -m serving.build_index`` (its ``CURRENT``
  generation is served), or a registered version such as ``models:/showroom@champion``
  (``python -m evaluation.promote``); resolved again on every reload. Unset: the serving folder of
  the latest finished ``python -m training.fit`` run on this machine (``latest_trained_index``),
  chosen once at start and named in the log.
- ``SHOWROOM_MILVUS_URI`` / ``SHOWROOM_MILVUS_TOKEN``: for indexes built with ``--backend milvus``, the
  Milvus to search on this machine (default: the URI they were built with) and its credentials
  (``engine.index.milvus``); a collection filled by another model or with other rows is refused.
- ``SHOWROOM_CATALOG_ROOT``: where the catalog's images are on this machine (default: where they
  were when the index was built); indexes store image paths relative to it.
- ``SHOWROOM_DETECTOR_WEIGHTS``: YOLO weights for detecting products in uploads (none: no detection);
  a ``.tflite`` export runs directly on LiteRT (``detectors.open``), others through Ultralytics.
- ``SHOWROOM_MAX_UPLOAD``: upload limit in bytes (default 10 MB).
- ``SHOWROOM_MAX_PIXELS`` (default 24,000,000), ``SHOWROOM_MIN_SIDE`` (32), ``SHOWROOM_MAX_ASPECT``
  (10): what an uploaded image's header may declare; checked before any pixel is decoded.
- ``SHOWROOM_DECODE_BUDGET_MB`` (512): what a worker's threads may hold in decoded uploads at once
  (``serving.budget``); a request waits up to ``SHOWROOM_DECODE_WAIT`` (10 s) for room, then 503.
  ``SHOWROOM_DECODE_LONG_SIDE`` (3000; 0: never): a JPEG whose long side is at least twice this is
  decoded 2, 4 or 8 times smaller by libjpeg, keeping the long side at least this (boxes and points
  stay in the photo's own pixels).
- ``SHOWROOM_RELOAD_TOKEN``: enables ``POST /api/reload`` for clients that send it (no default secret).
- ``SHOWROOM_GENERATION_FILE``: the record the workers of one server share (default under
  gunicorn: one per master process in the temp folder), see ``serving.state``;
  ``SHOWROOM_WATCH_SECONDS`` (1): how often an idle worker looks at it (a newer generation is
  loaded in the background while the current one answers).
- ``SHOWROOM_RATE_LIMIT`` (default ``2 per second;60 per minute`` per client on search and detect;
  empty: off), counted for the whole server in ``SHOWROOM_RATE_LIMIT_STORAGE`` (default under
  gunicorn: a SQLite file shared by its workers, one per master process in the temp folder, see
  ``serving.ratelimit``; else ``memory://``); ``SHOWROOM_PROXY_HOPS``: trust that many
  ``X-Forwarded-*`` hops (behind a reverse proxy), see ``serving.observability``.
- ``SHOWROOM_HUB_BETA`` (unset: off): rank results by distance minus this share of each product's
  room density, measured on the generation's scenes index (``engine.index.hubness``; answers then
  carry ``hub_score``); see docs/serving.md.
- ``SHOWROOM_ROOM_ORDER`` (unset: ``confidence``): how "shop this room" merges its objects' matches,
  ``confidence``, ``turns`` or ``distance`` (``engine.search.room_ranking``).
- ``SHOWROOM_DETECTOR``: a ready ``Detector`` object (tests inject one); overrides the weights.
- ``SHOWROOM_STATE``: a ready ``ServingState`` (tests inject one).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from detectors.category_map import GROUPS_MAP, load_category_map, map_for_detector
from detectors.open import open_detector
from engine.config import ImageLimits, Preprocessing
from engine.index.generations import generations, resolve_serving_folder
from engine.runtime import configure_runtime, setup_logging, state_dir
from serving.api import bp as api_bp
from serving.bodies import DrainUnreadBody
from serving.budget import DecodeBudget
from serving.errors import register_error_handlers
from serving.observability import install
from serving.pages import bp as pages_bp
from serving.ratelimit import default_storage_uri
from serving.state import ServingState, SharedGeneration, hub_beta, load_from_folder, room_order
from training.checkpoint import run_folder
from training.model_ref import is_registered, resolve_model

logger = logging.getLogger(__name__)

DEFAULT_RATE_LIMIT = "2 per second;60 per minute"
RESTART_PAUSE = 5.0  # seconds a worker that cannot load any generation waits before exiting to be restarted


class ServingSetupError(RuntimeError):
    """The app cannot start: no index to serve, or the one named is unusable; the message says what to set or run."""


@dataclass(frozen=True)
class TrainedIndex:
    """The serving folder a finished ``python -m training.fit`` run left on this machine.

    run_id: the MLflow run id; folder: ``<state>/models/<run_id>/index`` (``model.keras``,
    ``products/``, ``scenes/``); saved: when its products index was written (epoch seconds).
    """

    run_id: str
    folder: Path
    saved: float


def trained_indexes(home: Path) -> list[TrainedIndex]:
    """Every complete serving folder that ``training.fit`` saved under ``home`` (``$SHOWROOM_HOME``),
    oldest first. ``training.fit`` writes ``<home>/models/<run_id>/index`` at the end of a run
    (``training.trainer.Trainer.save``), then deletes the run's checkpoint folder ``<home>/checkpoints/<run_id>``; so
    a folder is taken only when the model and the products index (saved atomically, manifest last)
    are there, a ``scenes`` index if any has its manifest, and the run's checkpoint folder is gone.
    A run killed before or while saving is never taken, nor one trained with ``--no-index``."""
    found = []
    for index in Path(home).glob("models/*/index"):
        run_id = index.parent.name
        products = index / "products" / "manifest.json"
        scenes = index / "scenes"
        if not ((index / "model.keras").is_file() and products.is_file()):
            continue
        if scenes.exists() and not (scenes / "manifest.json").is_file():
            continue
        if run_folder(home, run_id).exists():  # still training, or killed: fit deletes it only after saving
            continue
        found.append(TrainedIndex(run_id, index, products.stat().st_mtime))
    return sorted(found, key=lambda t: (t.saved, t.run_id))


def latest_trained_index(home: Path) -> TrainedIndex:
    """The most recently saved of ``trained_indexes(home)``; ``ServingSetupError`` saying to train
    first when there is none."""
    found = trained_indexes(home)
    if not found:
        raise ServingSetupError(
            f"SHOWROOM_INDEX is not set and no finished training run has a serving folder under {Path(home) / 'models'}: "
            "run `python -m training.fit` first (the demo catalog, about 10 minutes), or set SHOWROOM_INDEX to a folder "
            "built by `python -m serving.build_index` or to models:/NAME@ALIAS")
    return found[-1]


def quiet_blas() -> None:
    """One BLAS thread for this process. A query's exact search is one small matrix-vector product
    that threads do not speed up, while OpenBLAS's idle workers keep spinning on both cores for a
    while after each call and slow the next request's detector and embedder by a third
    (``python -m benchmarks.query``: detect 43 ms in the app against 29 ms alone, 29 ms with this)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    if not logging.getLogger().handlers:  # gunicorn and `flask run` configure no logging of ours
        setup_logging()
    configure_runtime()
    quiet_blas()
    app = Flask(__name__)
    env = os.environ.get
    app.config.update(
        MAX_CONTENT_LENGTH=int(env("SHOWROOM_MAX_UPLOAD", 10 * 1024 * 1024)),
        SHOWROOM_INDEX=env("SHOWROOM_INDEX"),
        SHOWROOM_CATALOG_ROOT=env("SHOWROOM_CATALOG_ROOT"),
        SHOWROOM_DETECTOR_WEIGHTS=env("SHOWROOM_DETECTOR_WEIGHTS"),
        SHOWROOM_RELOAD_TOKEN=env("SHOWROOM_RELOAD_TOKEN"),
        SHOWROOM_IMAGE_LIMITS=ImageLimits(int(env("SHOWROOM_MAX_PIXELS", ImageLimits.max_pixels)),
                                          int(env("SHOWROOM_MIN_SIDE", ImageLimits.min_side)),
                                          float(env("SHOWROOM_MAX_ASPECT", ImageLimits.max_aspect))),
        SHOWROOM_RATE_LIMIT=env("SHOWROOM_RATE_LIMIT", DEFAULT_RATE_LIMIT),
        SHOWROOM_RATE_LIMIT_STORAGE=env("SHOWROOM_RATE_LIMIT_STORAGE") or default_storage_uri(),
        SHOWROOM_PROXY_HOPS=int(env("SHOWROOM_PROXY_HOPS", 0)),
        SHOWROOM_WATCH_SECONDS=float(env("SHOWROOM_WATCH_SECONDS", 1.0)),
        SHOWROOM_DECODE_BUDGET=int(float(env("SHOWROOM_DECODE_BUDGET_MB", 512)) * 2 ** 20),
        SHOWROOM_DECODE_WAIT=float(env("SHOWROOM_DECODE_WAIT", 10.0)),
        SHOWROOM_DECODE_LONG_SIDE=int(env("SHOWROOM_DECODE_LONG_SIDE", 3000)),
        SHOWROOM_STATE=None,
        SHOWROOM_DETECTOR=None,
        DEFAULT_K=12,
        ROOM_K=6,
        MAX_K=100,
    )
    if test_config:
        app.config.update(test_config)
    try:
        hub_beta()  # a wrong value is the server's setup error, not a damaged generation's
        room_order()
    except ValueError as exc:
        raise ServingSetupError(str(exc)) from None
    state = app.config["SHOWROOM_STATE"]
    if state is None:
        state = _start_state(app)
    app.extensions["showroom"] = state
    app.extensions["showroom_decode_budget"] = DecodeBudget(app.config["SHOWROOM_DECODE_BUDGET"], app.config["SHOWROOM_DECODE_WAIT"])
    hops = app.config["SHOWROOM_PROXY_HOPS"]
    if hops:  # behind a reverse proxy: the client address (for rate limits and logs) is in X-Forwarded-For
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    # a body answered without being read (a refusal, a 404, a 413 from the declared length) is read
    # to its end, up to 4x the upload limit, so a keep-alive client gets the answer and keeps its connection
    app.wsgi_app = DrainUnreadBody(app.wsgi_app, cap=4 * int(app.config["MAX_CONTENT_LENGTH"]))

    app.register_blueprint(api_bp)
    app.register_blueprint(pages_bp)
    register_error_handlers(app)
    install(app, lambda: state.current)
    return app


def _start_state(app: Flask) -> ServingState:
    index = app.config["SHOWROOM_INDEX"]
    source = f"SHOWROOM_INDEX={index}"
    if not index:
        latest = latest_trained_index(state_dir())
        index = str(latest.folder)
        source = f"{index} (training run {latest.run_id}; SHOWROOM_INDEX is not set)"
        logger.info("SHOWROOM_INDEX is not set: serving %s, the serving folder of the latest finished training run %s "
                    "(python -m training.fit); set SHOWROOM_INDEX to a serving folder or to models:/NAME@ALIAS to serve another",
                    latest.folder, latest.run_id)
    detector = app.config["SHOWROOM_DETECTOR"]
    if detector is None and app.config["SHOWROOM_DETECTOR_WEIGHTS"]:
        # low enough for any model's fill-in threshold; each model filters by its own preprocessing
        # a .tflite runs directly on LiteRT (no torch in the server); SHOWROOM_DETECTOR_RUNTIME=ultralytics to force the other
        detector = open_detector(app.config["SHOWROOM_DETECTOR_WEIGHTS"], conf=Preprocessing().detector_confidence)
        _ = detector.class_names  # load now, not on the first request
    # the classes whose missing boxes are filled in: the product groups for a detector of them, else the COCO map's
    classes = frozenset((map_for_detector(detector.class_names, check=False) if detector is not None else load_category_map()).classes)
    groups = load_category_map(GROUPS_MAP)

    def resolve() -> Path:
        if is_registered(str(index)):  # a registered version: re-resolved on every reload
            local = resolve_model(str(index)).folder
            if not (local / "products").is_dir():
                raise ValueError(f"{index} holds a model without indexes (its run had no index/ artifact): build a folder with "
                                 f"`python -m serving.build_index --model {index} --catalog DIR --out DIR` and serve that")
            return local
        return resolve_serving_folder(index)

    served: list[ServingState] = []  # this worker's state once started: a reload reuses what it serves

    def load(folder: Path, generation: int):
        return load_from_folder(folder, detector, classes, generation, groups, served[0].served if served else None)

    def fallbacks() -> list[Path]:  # the serving folder's other generations, newest first (a registered version has none)
        return [] if is_registered(str(index)) else generations(index)[::-1]

    shared = SharedGeneration.for_server(str(index))
    try:
        state = ServingState.start(resolve, load, shared, fallbacks, watch=float(app.config["SHOWROOM_WATCH_SECONDS"]))
        served.append(state)
        return state
    except (ValueError, OSError) as exc:
        if shared is not None and shared.read() is not None:
            # the server's other workers serve from memory: exit for gunicorn to start this worker again
            # (after a pause), rather than fail to boot, which would take the whole server down
            logger.critical("%s: no generation loads in this worker (%s); its siblings go on serving; exiting to be restarted "
                            "in %.0f s", source, exc, RESTART_PAUSE)
            time.sleep(RESTART_PAUSE)
            raise SystemExit(1) from None
        raise ServingSetupError(f"{source}: {exc}") from None

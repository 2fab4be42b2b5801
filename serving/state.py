"""What the app serves: one generation of model + indexes, swappable, and the same in every worker.

A reload in one worker builds the next ``Loaded`` completely, then publishes it in a small shared
record (``SharedGeneration``: a JSON file replaced atomically, guarded by ``flock``). Every worker
checks the record's ``stat`` before each request (microseconds) and, when it changed, loads the
published folder before answering, so after a reload no worker answers from the old generation
and no query fails: a query in flight keeps the generation it started with.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from detectors.category_map import CategoryMap, group_types, label_groups
from engine.index.serving_folder import PRODUCTS, SCENES
from engine.calibration import FILE as CALIBRATION_FILE, MatchCalibrator
from engine.data.detection import Detector
from engine.model.embedder import Embedder
from engine.files import write_json_atomic
from engine.index.generations import MODEL_FILE
from engine.index.catalog_index import CatalogIndex
from engine.data.proposals import WINDOW
from engine.index.hubness import DEFAULT_K, HubCorrection
from engine.search import ROOM_ORDER, ROOM_ORDERS, SearchEngine

logger = logging.getLogger(__name__)

# One load at a time in a process: a reload and a background follow (or two apps in one test process)
# must not read Keras/HDF5 files concurrently, which can deadlock in h5py's lock.
LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class Loaded:
    """One consistent generation of model + indexes; replaced whole on reload.

    generation: the server's counter (1 at start, +1 per reload), shared by all its workers.
    source: the folder the model and indexes were read from.
    """

    engine: SearchEngine
    model_fingerprint: str
    source: str
    generation: int = 1
    degraded: str = ""  # why this is not the published generation (it did not load here); "" when it is


def request_loaded() -> Loaded:
    """The generation the current request is answered from: taken once per request, so every part
    of one answer (results, their images and links) comes from the same generation."""
    from flask import current_app, g

    if "loaded" not in g:
        g.loaded = current_app.extensions["showroom"].current
    return g.loaded


def load_from_folder(folder: Path, detector: Detector | None = None, classes: frozenset[str] | None = None,
                     generation: int = 1, groups: CategoryMap | None = None, previous: Loaded | None = None) -> Loaded:
    """Load ``folder/model.keras`` (with its preprocessing) and the verified indexes built with it;
    ``groups`` (the product-groups map) says which detector classes are objects of a room and which
    catalog types each group searches; ``previous``: the generation served now, whose indexes are
    reused from memory where this folder holds the same bytes (a scenes index carried over by a
    catalog delta; the base of a segmented products index: ``CatalogIndex.load``).
    One load at a time in a process (``LOAD_LOCK``)."""
    with LOAD_LOCK:
        return _load_folder(Path(folder), detector, classes, generation, groups, previous)


def _load_folder(folder: Path, detector: Detector | None, classes: frozenset[str] | None, generation: int,
                 groups: CategoryMap | None, previous: Loaded | None) -> Loaded:
    embedder = Embedder.load(folder / MODEL_FILE)
    fp = embedder.fingerprint
    reuse = previous.engine.products if previous is not None else None
    products = CatalogIndex.load(folder / PRODUCTS, model_fingerprint=fp, reuse=reuse)
    reuse_scenes = previous.engine.scenes if previous is not None else None
    scenes = CatalogIndex.load(folder / SCENES, model_fingerprint=fp, reuse=reuse_scenes) if (folder / SCENES).exists() else None
    # a generation's calibration belongs to its model: one of another model is refused with the generation
    calibrator = MatchCalibrator.load(folder / CALIBRATION_FILE, model_fingerprint=fp) if (folder / CALIBRATION_FILE).is_file() else None
    engine = SearchEngine(embedder, products, scenes, detector, classes,
                          label_groups=label_groups(detector.class_names, groups) if detector is not None and groups is not None else {},
                          group_types=group_types(groups, products.types) if groups is not None else {}, calibrator=calibrator,
                          hubness=_hubness(products, scenes, previous), room_order=room_order())
    logger.info("%s: warmed up in %.2f s", folder, engine.warm_up())  # before it serves (or is published)
    return Loaded(engine, fp, str(folder), generation)


def room_order() -> str:
    """How "shop this room" merges its objects' matches (``SHOWROOM_ROOM_ORDER``, one of
    ``engine.search.ROOM_ORDERS``; unset: ``ROOM_ORDER``, the development scenes' choice)."""
    text = os.environ.get("SHOWROOM_ROOM_ORDER", "").strip()
    if not text:
        return ROOM_ORDER
    if text not in ROOM_ORDERS:
        raise ValueError(f"SHOWROOM_ROOM_ORDER must be one of {', '.join(ROOM_ORDERS)}, got {text[:40]!r}")
    return text


def hub_beta() -> float:
    """The share of a product's room density taken off its distances (``SHOWROOM_HUB_BETA``, e.g. the
    development scenes' choice ``engine.index.hubness.DEFAULT_BETA``); unset or 0: off, the default
    until it is measured on the served model (docs/evaluation.md)."""
    text = os.environ.get("SHOWROOM_HUB_BETA", "").strip()
    try:
        beta = float(text) if text else 0.0
    except ValueError:
        raise ValueError(f"SHOWROOM_HUB_BETA must be a number >= 0, got {text!r}") from None
    if not beta >= 0:
        raise ValueError(f"SHOWROOM_HUB_BETA must be a number >= 0, got {text!r}")
    return beta


def _hubness(products: CatalogIndex, scenes: CatalogIndex | None, previous: Loaded | None) -> HubCorrection | None:
    """The hub correction of ``products`` against the crops of the scenes index (the retailer's room
    photos); None without a scenes index or with ``SHOWROOM_HUB_BETA=0``. Reused from ``previous``
    when both indexes are the very ones it was measured on."""
    beta = hub_beta()
    if beta == 0 or scenes is None or not len(scenes) or not len(products):
        return None
    old = previous.engine if previous is not None else None
    if old is not None and old.hubness is not None and old.products is products and old.scenes is scenes:
        return old.hubness.with_beta(beta)
    t = time.perf_counter()
    crops = np.array([label != WINDOW for label in scenes.items.column("label")], bool)  # proposed objects, not the fixed windows
    hub = HubCorrection.fit(products.vectors, products.items.column("product_id"), scenes.vectors[crops], k=DEFAULT_K, beta=beta,
                            reference_name=f"scenes index: {int(crops.sum())} crops")
    logger.info("hub correction (beta %.2f, k %d) of %d products against %s in %.2f s", beta, hub.k, len(hub.density), hub.reference,
                time.perf_counter() - t)
    return hub


@dataclass(frozen=True)
class Record:
    """The published generation: its number and the folder every worker loads (``degraded``: why
    the worker that published it fell back to this folder, "" when it is the one asked for)."""

    generation: int
    folder: str
    model: str
    degraded: str = ""


class SharedGeneration:
    """A generation record shared by the worker processes of one server (a file + ``flock``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @classmethod
    def for_server(cls, index: str) -> SharedGeneration | None:
        """The record of this server's workers: ``$SHOWROOM_GENERATION_FILE``, else, under gunicorn,
        one file per master process (its pid and start time) and ``SHOWROOM_INDEX``; None for a
        single-process server (``flask run``), which needs none."""
        explicit = os.environ.get("SHOWROOM_GENERATION_FILE")
        if explicit:
            return cls(explicit)
        path = server_file("generation", ".json", index)
        return cls(path) if path is not None else None

    def signature(self) -> tuple[int, int, int] | None:
        """A cheap change detector: (inode, size, mtime ns) of the record, None if absent."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def read(self) -> Record | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Record(int(data["generation"]), str(data["folder"]), str(data.get("model", "")), str(data.get("degraded", "")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring a damaged generation record %s: %s", self.path, exc)
            return None

    def write(self, record: Record) -> None:
        write_json_atomic(self.path, {"generation": record.generation, "folder": record.folder, "model": record.model,
                                      "degraded": record.degraded,
                                      "published": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pid": os.getpid()})

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes: read-increment-publish is one step."""
        with open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _marked(loaded: Loaded, degraded: str) -> Loaded:
    return loaded if loaded.degraded == degraded else replace(loaded, degraded=degraded)


def _first_that_loads(resolve: Callable[[], Path], load: Callable[[Path, int], Loaded], record: Record | None, number: int,
                      fallbacks: Callable[[], list[Path]]) -> Loaded:
    """The resolved folder loaded as generation ``number``; when it does not load, the first of
    ``fallbacks()`` that does (not the published folder, which was tried), marked degraded; else
    ``NothingLoads`` naming every failure."""
    failures = []
    try:
        asked = resolve()
    except (ValueError, OSError) as exc:
        asked, failures = None, [str(exc)]
    if asked is not None and (record is None or Path(record.folder) != asked):
        try:
            return load(asked, number)
        except (ValueError, OSError) as exc:
            failures.append(f"{asked}: {exc}")
    elif asked is not None:
        failures.append(f"{asked}: the published generation, see above")
    tried = {str(asked), record.folder if record else ""}
    for folder in fallbacks():
        if str(folder) in tried:
            continue
        try:
            loaded = load(folder, number if record is None else record.generation)
        except (ValueError, OSError) as exc:
            failures.append(f"{folder}: {exc}")
            continue
        return _marked(loaded, f"{asked or 'the index asked for'} does not load ({failures[-1] if failures else 'unknown'}); "
                               f"serving the older {folder}")
    raise NothingLoads("; ".join(failures) or "nothing to load")


def server_file(name: str, suffix: str, salt: str = "") -> Path | None:
    """A file shared by the workers of this gunicorn server and by no other server:
    ``<temp>/showroom-<uid>/<name>-<master pid>-<key><suffix>``, ``key`` a hash of the master's pid,
    its start time (a reused pid gets another file) and ``salt``; None outside gunicorn (no
    ``SERVER_SOFTWARE`` of gunicorn's), where the process is the whole server. Nothing is created."""
    if "gunicorn" not in os.environ.get("SERVER_SOFTWARE", ""):
        return None
    master = os.getppid()
    key = hashlib.sha256(f"{master}|{_start_time(master)}|{salt}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"showroom-{os.getuid()}" / f"{name}-{master}-{key}{suffix}"


def _start_time(pid: int) -> str:
    """A process's start time in clock ticks (Linux ``/proc``), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


class NothingLoads(ValueError):
    """No generation loads: neither the published one, nor the resolved one, nor any older one on disk."""


class ServingState:
    """Holds the current ``Loaded``.

    resolve: where the index to serve is now (the folder ``CURRENT`` names, or a registered
        version's download), called at start and on every reload.
    load: reads a resolved folder as generation n.
    shared: the record shared with the other workers (None: this process is the whole server).
    fallbacks: older folders that may be served when the asked-for one does not load (the serving
        folder's other generations, newest first); tried only at start.
    """

    def __init__(self, loaded: Loaded, resolve: Callable[[], Path] | None = None,
                 load: Callable[[Path, int], Loaded] | None = None, shared: SharedGeneration | None = None,
                 watch: float = 0.0) -> None:
        self._current = loaded
        self._resolve, self._load, self._shared = resolve, load, shared
        self._lock = threading.Lock()
        self._seen = shared.signature() if shared is not None else None
        self._loading = False
        if shared is not None and watch > 0:  # an idle worker notices a publication too, not only at its next request
            threading.Thread(target=self._watch, args=(watch,), daemon=True, name="showroom-generation-watch").start()

    @classmethod
    def start(cls, resolve: Callable[[], Path], load: Callable[[Path, int], Loaded], shared: SharedGeneration | None,
              fallbacks: Callable[[], list[Path]] = list, watch: float = 1.0) -> ServingState:
        """Load what the server's other workers serve (the shared record), or resolve and publish it.

        A worker never refuses to start while some generation loads: when the published folder is
        damaged (a worker restarted after its generation's files were broken), it serves the newest
        older generation that loads, marked ``degraded`` (logged as an error, in ``/healthz`` and
        ``/metrics``), and follows the next good publication. ``NothingLoads`` when none does.
        ``watch``: seconds between looks at the shared record (0: only when a request comes)."""
        if shared is None:
            loaded = _first_that_loads(resolve, load, None, 1, fallbacks)
            if loaded.degraded:
                logger.error("DEGRADED: %s", loaded.degraded)
            return cls(loaded, resolve, load, None)
        with shared.locked():
            record = shared.read()
            if record is not None:
                try:
                    loaded = load(Path(record.folder), record.generation)
                    return cls(_marked(loaded, record.degraded), resolve, load, shared, watch)
                except (ValueError, OSError) as exc:
                    logger.error("the published generation %d (%s) does not load here: %s", record.generation, record.folder, exc)
                    asked = f"the published generation {record.generation} ({record.folder}) does not load: {exc}"
            loaded = _first_that_loads(resolve, load, record, record.generation + 1 if record else 1, fallbacks)
            if record is None or not loaded.degraded:  # a new CURRENT (or the first start): every worker serves it
                shared.write(Record(loaded.generation, loaded.source, loaded.model_fingerprint, loaded.degraded))
                if loaded.degraded:
                    logger.error("DEGRADED: %s", loaded.degraded)
            else:  # the others still serve the published generation from memory: this worker alone falls back
                loaded = _marked(loaded, f"{asked}; this worker serves {loaded.source} instead")
                logger.error("DEGRADED: %s", loaded.degraded)
        return cls(loaded, resolve, load, shared, watch)

    @property
    def current(self) -> Loaded:
        """The generation to answer from. When another worker published a newer one, it is loaded
        in the background and this one keeps answering until the new one is ready (no request waits
        for a load)."""
        if self._shared is not None and self._shared.signature() != self._seen:
            self._notice()
        return self._current

    @property
    def loading(self) -> bool:
        """Whether a published generation is being loaded in the background now."""
        return self._loading

    @property
    def served(self) -> Loaded:
        """The generation answered from now, without looking at the shared record."""
        return self._current

    def _watch(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            try:
                if self._shared.signature() != self._seen:
                    self._notice()
            except Exception:  # never let the watcher die: requests still notice on their own
                logger.exception("the generation watcher failed once; it goes on")

    def _notice(self) -> None:
        with self._lock:
            if self._loading or self._shared.signature() == self._seen:
                return  # already loading, or another thread caught up
            self._loading = True
        # not a daemon: an interpreter that exits waits for a load in progress (TensorFlow aborts if torn down mid-load)
        threading.Thread(target=self._follow, name="showroom-generation-follow").start()

    def _follow(self) -> None:
        """Load the published generation (until none newer was published meanwhile), then swap it in."""
        try:
            while True:
                signature = self._shared.signature()
                record = self._shared.read()
                current = self._current
                if record is None or record.generation == current.generation and record.folder == current.source:
                    fresh = None
                else:
                    try:
                        fresh = _marked(self._load(Path(record.folder), record.generation), record.degraded)
                    except (ValueError, OSError) as exc:
                        logger.error("cannot follow generation %d (%s): %s; still serving generation %d",
                                     record.generation, record.folder, exc, current.generation)
                        fresh = None
                with self._lock:
                    self._seen = signature
                    if fresh is not None and fresh.generation >= self._current.generation:  # never back past a reload of ours
                        self._current = fresh
                        logger.info("following generation %d from %s (model %s)", fresh.generation, fresh.source,
                                    fresh.model_fingerprint[:12])
                    if self._shared.signature() == signature:
                        return
        finally:
            self._loading = False

    def reload(self) -> Loaded:
        """Resolve and load the index anew; publish it to every worker. A ``ValueError`` (damaged or
        mismatched index) leaves the current generation served everywhere."""
        if self._resolve is None or self._load is None:
            raise ValueError("this app was given a fixed engine; nothing to reload from")
        with self._lock:
            if self._shared is None:
                fresh = self._load(self._resolve(), self._current.generation + 1)
            else:
                with self._shared.locked():
                    record = self._shared.read()
                    number = max(self._current.generation, record.generation if record else 0) + 1
                    fresh = self._load(self._resolve(), number)
                    self._shared.write(Record(fresh.generation, fresh.source, fresh.model_fingerprint))
                    self._seen = self._shared.signature()
            self._current = fresh  # one reference assignment: atomic for readers
            logger.info("reloaded: generation %d from %s (model %s)", fresh.generation, fresh.source, fresh.model_fingerprint[:12])
            return fresh

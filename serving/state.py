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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from detectors.category_map import CategoryMap, group_types, label_groups
from engine.index.serving_folder import PRODUCTS, SCENES
from engine.calibration import FILE as CALIBRATION_FILE, MatchCalibrator
from engine.data.detection import Detector
from engine.model.embedder import Embedder
from engine.files import write_json_atomic
from engine.index.generations import MODEL_FILE
from engine.index.catalog_index import CatalogIndex
from engine.search import SearchEngine

logger = logging.getLogger(__name__)


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


def request_loaded() -> Loaded:
    """The generation the current request is answered from: taken once per request, so every part
    of one answer (results, their images and links) comes from the same generation."""
    from flask import current_app, g

    if "loaded" not in g:
        g.loaded = current_app.extensions["showroom"].current
    return g.loaded


def load_from_folder(folder: Path, detector: Detector | None = None, classes: frozenset[str] | None = None,
                     generation: int = 1, groups: CategoryMap | None = None) -> Loaded:
    """Load ``folder/model.keras`` (with its preprocessing) and the verified indexes built with it;
    ``groups`` (the product-groups map) says which detector classes are objects of a room and which
    catalog types each group searches."""
    folder = Path(folder)
    embedder = Embedder.load(folder / MODEL_FILE)
    fp = embedder.fingerprint
    products = CatalogIndex.load(folder / PRODUCTS, model_fingerprint=fp)
    scenes = CatalogIndex.load(folder / SCENES, model_fingerprint=fp) if (folder / SCENES).exists() else None
    # a generation's calibration belongs to its model: one of another model is refused with the generation
    calibrator = MatchCalibrator.load(folder / CALIBRATION_FILE, model_fingerprint=fp) if (folder / CALIBRATION_FILE).is_file() else None
    engine = SearchEngine(embedder, products, scenes, detector, classes,
                          label_groups=label_groups(detector.class_names, groups) if detector is not None and groups is not None else {},
                          group_types=group_types(groups, products.types) if groups is not None else {}, calibrator=calibrator)
    logger.info("%s: warmed up in %.2f s", folder, engine.warm_up())  # before it serves (or is published)
    return Loaded(engine, fp, str(folder), generation)


@dataclass(frozen=True)
class Record:
    """The published generation: its number and the folder every worker loads."""

    generation: int
    folder: str
    model: str


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
        if "gunicorn" not in os.environ.get("SERVER_SOFTWARE", ""):
            return None
        master = os.getppid()
        key = hashlib.sha256(f"{master}|{_start_time(master)}|{index}".encode()).hexdigest()[:16]
        return cls(Path(tempfile.gettempdir()) / f"showroom-{os.getuid()}" / f"generation-{master}-{key}.json")

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
            return Record(int(data["generation"]), str(data["folder"]), str(data.get("model", "")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring a damaged generation record %s: %s", self.path, exc)
            return None

    def write(self, record: Record) -> None:
        write_json_atomic(self.path, {"generation": record.generation, "folder": record.folder, "model": record.model,
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


def _start_time(pid: int) -> str:
    """A process's start time in clock ticks (Linux ``/proc``), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


class ServingState:
    """Holds the current ``Loaded``.

    resolve: where the index to serve is now (the folder ``CURRENT`` names, or a registered
        version's download), called at start and on every reload.
    load: reads a resolved folder as generation n.
    shared: the record shared with the other workers (None: this process is the whole server).
    """

    def __init__(self, loaded: Loaded, resolve: Callable[[], Path] | None = None,
                 load: Callable[[Path, int], Loaded] | None = None, shared: SharedGeneration | None = None) -> None:
        self._current = loaded
        self._resolve, self._load, self._shared = resolve, load, shared
        self._lock = threading.Lock()
        self._seen = shared.signature() if shared is not None else None

    @classmethod
    def start(cls, resolve: Callable[[], Path], load: Callable[[Path, int], Loaded], shared: SharedGeneration | None) -> ServingState:
        """Load what the server's other workers serve (the shared record), or resolve and publish it."""
        if shared is None:
            return cls(load(resolve(), 1), resolve, load, None)
        with shared.locked():
            record = shared.read()
            loaded = None
            if record is not None:
                try:
                    loaded = load(Path(record.folder), record.generation)
                except (ValueError, OSError) as exc:
                    logger.error("the published generation %d (%s) does not load (%s); resolving afresh", record.generation, record.folder, exc)
            if loaded is None:
                loaded = load(resolve(), record.generation + 1 if record else 1)
                shared.write(Record(loaded.generation, loaded.source, loaded.model_fingerprint))
        return cls(loaded, resolve, load, shared)

    @property
    def current(self) -> Loaded:
        """The generation to answer from: the shared one, loaded first if another worker published it."""
        if self._shared is not None and self._shared.signature() != self._seen:
            self._follow()
        return self._current

    def _follow(self) -> None:
        with self._lock:
            signature = self._shared.signature()
            if signature == self._seen:
                return  # another thread of this worker caught up while we waited
            record = self._shared.read()
            self._seen = signature
            if record is None or record.generation == self._current.generation and record.folder == self._current.source:
                return
            try:
                fresh = self._load(Path(record.folder), record.generation)
            except (ValueError, OSError) as exc:
                logger.error("cannot follow generation %d (%s): %s; still serving generation %d",
                             record.generation, record.folder, exc, self._current.generation)
                return
            self._current = fresh
            logger.info("following generation %d from %s (model %s)", fresh.generation, fresh.source, fresh.model_fingerprint[:12])

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

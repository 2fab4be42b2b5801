"""What the app serves, loaded once and swappable: the search engine built from an index folder."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.build_indexes import PRODUCTS, SCENES
from engine.detection import Detector
from engine.embed import Embedder
from engine.index_folder import CatalogIndex
from engine.search import SearchEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """One consistent generation of model + indexes; replaced whole on reload."""

    engine: SearchEngine
    model_fingerprint: str
    source: str


def load_from_folder(folder: Path, detector: Detector | None = None, classes: frozenset[str] | None = None) -> Loaded:
    """Load ``folder/model.keras`` (with its preprocessing) and the verified indexes built with it."""
    folder = Path(folder)
    embedder = Embedder.load(folder / "model.keras")
    fp = embedder.fingerprint
    products = CatalogIndex.load(folder / PRODUCTS, model_fingerprint=fp)
    scenes = CatalogIndex.load(folder / SCENES, model_fingerprint=fp) if (folder / SCENES).exists() else None
    return Loaded(SearchEngine(embedder, products, scenes, detector, classes), fp, str(folder))


class ServingState:
    """Holds the current ``Loaded``; ``reload`` builds the next one completely before swapping it in,
    so a query in flight keeps the generation it started with and none fails during a swap."""

    def __init__(self, loaded: Loaded, loader: Callable[[], Loaded] | None = None) -> None:
        self._current = loaded
        self._loader = loader
        self._lock = threading.Lock()

    @property
    def current(self) -> Loaded:
        return self._current

    def reload(self) -> Loaded:
        if self._loader is None:
            raise ValueError("this app was given a fixed engine; nothing to reload from")
        with self._lock:
            fresh = self._loader()
            self._current = fresh  # one reference assignment: atomic for readers
            logger.info("reloaded indexes from %s (model %s)", fresh.source, fresh.model_fingerprint[:12])
            return fresh

"""The index backends by kind (``BACKENDS``), and ``BackendSpec``: which backend a build uses, with its settings.

A manifest's ``index_kind`` names the registry entry whose class loads it; a ``BackendSpec`` names
the entry that builds, tuned to a recall target by the entry's tuner when it has one. Adding a
backend is one module with a class implementing ``SearchIndex`` and ``IndexBackend``
(``engine.index.base``) and one line in ``BACKENDS`` (docs/index_backends.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from engine.index.base import BuildRequest, IndexBackend, IndexBackendError, SearchIndex
from engine.index.brute_force import BruteForceIndex
from engine.index.milvus import MilvusIndex, MilvusSettings
from engine.index.scann_backend import ScannIndex, ScannParams
from engine.index.tuning import Tuning, TuningConfig, tune_index

# tune(vectors float32 (N, D), queries float32 (Q, D) | None, config, settings, *, queries_label) -> (index, Tuning)
Tuner = Callable[..., tuple[SearchIndex, Tuning]]


@dataclass(frozen=True)
class Backend:
    """One registry entry.

    index: the class that builds and loads the backend's indexes; its ``kind`` is the entry's key.
    settings: the backend's frozen settings class: a ``BackendSpec`` without settings gets
        ``settings()``, and one with settings of another class is refused (None: it takes none).
    tune: the backend's tuner, used instead of ``index.build`` when a build has a ``TuningConfig``
        (``engine.index.tuning.tune_index``'s signature); None: the backend is built as set.
    """

    index: IndexBackend
    settings: type | None = None
    tune: Tuner | None = None


BACKENDS: Mapping[str, Backend] = MappingProxyType({
    BruteForceIndex.kind: Backend(BruteForceIndex),
    ScannIndex.kind: Backend(ScannIndex, ScannParams, tune=tune_index),
    MilvusIndex.kind: Backend(MilvusIndex, MilvusSettings),
})


@dataclass(frozen=True)
class BackendSpec:
    """Which backend indexes a build's vectors, and its settings: chosen once (``serving.build_index``'s
    flags, ``training.fit``) and passed unchanged down to ``CatalogIndex.from_vectors``.

    kind: a registry key: ``scann`` (exact search under ``brute_force_below`` items, ScaNN above;
        tuned when the build has a ``TuningConfig``), ``brute_force``, ``milvus``.
    settings: that backend's frozen settings (``ScannParams``, ``MilvusSettings``); None: its defaults.
    """

    kind: str = ScannIndex.kind
    settings: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"a backend kind is a registry key such as {', '.join(BACKENDS)}; got {self.kind!r}")

    def named(self, suffix: str) -> BackendSpec:
        """The spec of one index of a build (``suffix``: ``products``, ``scenes``). Settings naming storage
        outside the index folder give each index its own (``MilvusSettings.named``: a collection each);
        other settings are shared as they are."""
        named = getattr(self.settings, "named", None)
        return replace(self, settings=named(suffix)) if callable(named) else self

    def build(self, request: BuildRequest, tuning: TuningConfig | None = None, *,
              backends: Mapping[str, Backend] = BACKENDS) -> tuple[SearchIndex, dict | None]:
        """The index of ``request.vectors`` and the record stored as its manifest's ``tuning``: tuned to
        ``tuning`` by the backend's tuner when it has one, else built with the settings as they are."""
        entry = backends.get(self.kind)
        if entry is None:
            raise ValueError(f"unknown index backend {self.kind!r}: registered are {', '.join(sorted(backends))}")
        settings = self.settings
        if entry.settings is not None:
            if settings is None:
                try:
                    settings = entry.settings()
                except TypeError:
                    raise ValueError(f"the {self.kind} backend has no default settings: give it a {entry.settings.__name__}") from None
            if not isinstance(settings, entry.settings):
                raise ValueError(f"the {self.kind} backend takes {entry.settings.__name__}, not {type(settings).__name__}")
        if tuning is not None and entry.tune is not None:
            index, result = entry.tune(request.vectors, request.queries, tuning, settings, queries_label=request.queries_label)
            return index, asdict(result)
        return entry.index.build(settings, request)


def load_search_index(kind: str, folder: Path, vectors: np.ndarray, params: dict, *, model_fingerprint: str = "",
                      backends: Mapping[str, Backend] = BACKENDS) -> SearchIndex:
    """The index of manifest kind ``kind`` saved in ``folder``, by its registered class (see
    ``IndexBackend.load``); an unregistered kind raises ``IndexBackendError``."""
    entry = backends.get(kind)
    if entry is None:
        raise IndexBackendError(f"its index kind {kind!r} is not a registered backend ({', '.join(sorted(backends))}): load it where that "
                                f"backend is installed, or rebuild it with python -m serving.build_index")
    return entry.index.load(folder, vectors, params, model_fingerprint=model_fingerprint)

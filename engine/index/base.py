"""The contract of an index backend: ``SearchIndex`` (search, save, describe), ``IndexBackend`` (build, load).

A backend is one class implementing both, registered by its ``kind`` in ``engine.index.backends``
(docs/index_backends.md). ``BuildRequest`` is what every build is given besides the backend's own
settings; ``Neighbors`` is what every search returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Neighbors:
    """k nearest items per query: ``indices`` int64 (Q, k) into the indexed vectors, nearest first,
    and their Euclidean ``distances`` float32 (Q, k)."""

    indices: np.ndarray
    distances: np.ndarray


def checked_queries(queries: np.ndarray, dim: int, k: int, size: int) -> tuple[np.ndarray, int]:
    """What every ``SearchIndex.search`` checks first: ``queries`` as contiguous float32 (Q, ``dim``)
    and k >= 1 (``ValueError`` otherwise), and k capped at the ``size`` rows there are."""
    queries = np.ascontiguousarray(queries, np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries must be (Q, {dim}), got {queries.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return queries, min(k, size)


class IndexBackendError(ValueError):
    """A saved index whose backend data does not belong to it (e.g. a Milvus collection filled by
    another model), or whose backend is not registered; the message says what to rebuild."""


class SearchIndex(Protocol):
    """Euclidean k-NN over N vectors of dimension D, saved to / loaded from a folder."""

    kind: str

    @property
    def size(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> Neighbors:
        """``queries``: float32 (Q, D) → the min(k, N) nearest items of each."""
        ...

    def save(self, folder: Path) -> None:
        """The backend's own files into ``folder`` (it exists, and is checksummed with the index folder);
        the vectors themselves are stored by the caller."""
        ...

    def describe(self) -> dict:
        """Settings to store in the index manifest (``index_params``, passed back to ``load``): JSON values."""
        ...


@dataclass(frozen=True, eq=False)
class BuildRequest:
    """What a backend builds an index from, besides its own settings.

    vectors: float32 (N, D), the rows of the index in order.
    model_fingerprint: the embedder that computed them (a backend storing the vectors outside the index
        folder records it, to refuse them later when another model is served).
    metadata: N records ``{"item_id", "product_id", "type"}`` in row order, for backends that store them.
    queries / queries_label: float32 (Q, D) queries to measure recall on (``None``: a sample of the
        vectors), and how the record names them.
    k / n_queries / seed: how a backend that measures its own recall samples it (recall@k on at most
        ``n_queries`` queries, seeded): the build's ``TuningConfig``'s when it has one.
    """

    vectors: np.ndarray
    model_fingerprint: str = ""
    metadata: Sequence[Mapping[str, str]] = ()
    queries: np.ndarray | None = None
    queries_label: str = "given query vectors"
    k: int = 10
    n_queries: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if np.ndim(self.vectors) != 2:
            raise ValueError(f"vectors must be (N, D), got shape {np.shape(self.vectors)}")
        if self.metadata and len(self.metadata) != len(self.vectors):
            raise ValueError(f"{len(self.vectors)} vectors but {len(self.metadata)} metadata records")
        if min(self.k, self.n_queries) < 1:
            raise ValueError(f"k and n_queries must be >= 1, got {self.k} and {self.n_queries}")


class IndexBackend(Protocol):
    """The class side of a backend, what the registry holds (``engine.index.backends.Backend``)."""

    kind: str  # the registry key, and the manifests' ``index_kind``

    def build(self, settings: Any, request: BuildRequest) -> tuple[SearchIndex, dict | None]:
        """An index of ``request.vectors`` with ``settings`` (the backend's own frozen settings, or None
        if it takes none), and the record stored as the manifest's ``tuning`` (None: nothing measured).
        The index may be of another registered kind (the ScaNN backend answers small catalogs with exact search)."""
        ...

    def load(self, folder: Path, vectors: np.ndarray, params: dict, *, model_fingerprint: str = "") -> SearchIndex:
        """The index ``save`` wrote into ``folder``, over the index folder's ``vectors`` float32 (N, D);
        ``params``: its ``describe()`` as stored in the manifest; ``model_fingerprint``: the model the
        manifest says built it. Raises ``IndexBackendError`` when its data does not belong to this index."""
        ...

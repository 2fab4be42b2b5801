"""Nearest-neighbour search over embeddings: the ``SearchIndex`` protocol and exact brute force."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Neighbors:
    """k nearest items per query: ``indices`` int64 (Q, k) into the indexed vectors, nearest first,
    and their Euclidean ``distances`` float32 (Q, k)."""

    indices: np.ndarray
    distances: np.ndarray


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

    def save(self, folder: Path) -> None: ...

    def describe(self) -> dict:
        """Settings to store in the index manifest (passed back to ``load``)."""
        ...


class BruteForceIndex:
    """Exact search with numpy: one (Q, N) distance matrix per block of queries."""

    def __init__(self, vectors: np.ndarray, *, block: int = 1024) -> None:
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be (N, D), got {vectors.shape}")
        self._v = vectors
        self._sq = np.einsum("ij,ij->i", vectors, vectors)
        self._block = block

    kind = "brute_force"

    def save(self, folder: Path) -> None:
        """Nothing beyond the vectors, which the caller stores."""

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, params: dict) -> BruteForceIndex:
        return cls(vectors)

    def describe(self) -> dict:
        return {}

    @property
    def size(self) -> int:
        return len(self._v)

    @property
    def dim(self) -> int:
        return self._v.shape[1]

    def search(self, queries: np.ndarray, k: int) -> Neighbors:
        queries = np.asarray(queries, np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}), got {queries.shape}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, self.size)
        idx = np.zeros((len(queries), k), np.int64)
        dist = np.zeros((len(queries), k), np.float32)
        for s in range(0, len(queries), self._block):
            q = queries[s : s + self._block]
            d2 = np.einsum("ij,ij->i", q, q)[:, None] + self._sq[None, :] - 2.0 * (q @ self._v.T)  # float32 BLAS
            part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < self.size else np.tile(np.arange(self.size), (len(q), 1))
            pd = np.take_along_axis(d2, part, 1)
            order = np.lexsort((part, pd), axis=1)  # by distance, ties by index: deterministic
            idx[s : s + len(q)] = np.take_along_axis(part, order, 1)
            dist[s : s + len(q)] = np.sqrt(np.maximum(np.take_along_axis(pd, order, 1), 0.0))
        return Neighbors(idx, dist)


@dataclass(frozen=True)
class ScannParams:
    """ScaNN settings; 0 means derived from the number of items N (see ``ScannIndex.derive``).

    brute_force_below: under this N, exact search is as fast and is used instead.
    """

    brute_force_below: int = 20_000
    leaves: int = 0
    leaves_to_search: int = 0
    reorder: int = 0
    dims_per_block: int = 2
    anisotropic_threshold: float = 0.2
    training_sample: int = 100_000


class ScannIndex:
    """ScaNN: tree partitioning + asymmetric hashing + exact reordering, squared-L2 scoring.

    The only place ``scann`` is imported. Distances returned are Euclidean (the square root of
    ScaNN's squared L2).
    """

    kind = "scann"

    def __init__(self, vectors: np.ndarray, params: ScannParams = ScannParams(), *, max_k: int = 100, _searcher=None) -> None:
        vectors = np.ascontiguousarray(vectors, np.float32)
        if _searcher is not None:  # loaded from disk
            self._n, self._d = vectors.shape
            self.params = params
            self._searcher = _searcher
            return
        import scann

        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError(f"vectors must be (N >= 2, D), got {vectors.shape}")
        self._n, self._d = vectors.shape
        self.params = self.derive(self._n, params)
        p = self.params
        builder = scann.scann_ops_pybind.builder(vectors, max(1, min(max_k, self._n)), "squared_l2")
        builder = builder.tree(num_leaves=p.leaves, num_leaves_to_search=p.leaves_to_search,
                               training_sample_size=min(p.training_sample, self._n))
        builder = builder.score_ah(p.dims_per_block, anisotropic_quantization_threshold=p.anisotropic_threshold)
        self._searcher = builder.reorder(p.reorder).build()

    def save(self, folder: Path) -> None:
        """ScaNN's own files into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self._searcher.serialize(str(folder), relative_path=True)

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, params: dict) -> ScannIndex:
        import scann

        searcher = scann.scann_ops_pybind.load_searcher(str(folder))
        return cls(vectors, ScannParams(**params), _searcher=searcher)

    def describe(self) -> dict:
        return asdict(self.params)

    @staticmethod
    def derive(n: int, params: ScannParams) -> ScannParams:
        """Fill the automatic settings: leaves ≈ sqrt(N), search 1/10 of them (at least 16), reorder 250."""
        leaves = params.leaves or max(2, min(n // 20, int(round(np.sqrt(n)))))
        to_search = params.leaves_to_search or min(leaves, max(16, leaves // 10))
        reorder = params.reorder or 250
        return ScannParams(params.brute_force_below, leaves, to_search, reorder, params.dims_per_block,
                           params.anisotropic_threshold, params.training_sample)

    @property
    def size(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._d

    def search(self, queries: np.ndarray, k: int) -> Neighbors:
        queries = np.ascontiguousarray(queries, np.float32)
        if queries.ndim != 2 or queries.shape[1] != self._d:
            raise ValueError(f"queries must be (Q, {self._d}), got {queries.shape}")
        k = min(k, self._n)
        idx, d2 = self._searcher.search_batched(queries, final_num_neighbors=k,
                                                pre_reorder_num_neighbors=max(k, self.params.reorder),
                                                leaves_to_search=self.params.leaves_to_search)
        return Neighbors(np.asarray(idx, np.int64), np.sqrt(np.maximum(np.asarray(d2, np.float32), 0.0)))


def build_index(vectors: np.ndarray, params: ScannParams = ScannParams()) -> SearchIndex:
    """Exact search for small catalogs (under ``params.brute_force_below``), ScaNN above."""
    if len(vectors) < max(2, params.brute_force_below):
        return BruteForceIndex(vectors)
    return ScannIndex(vectors, params)


def load_index(kind: str, folder: Path, vectors: np.ndarray, params: dict) -> SearchIndex:
    """Load a saved index of ``kind`` (``brute_force`` or ``scann``)."""
    if kind == BruteForceIndex.kind:
        return BruteForceIndex.load(folder, vectors, params)
    if kind == ScannIndex.kind:
        return ScannIndex.load(folder, vectors, params)
    raise ValueError(f"unknown index kind {kind!r}")

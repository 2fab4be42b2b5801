"""Nearest-neighbour search over embeddings: the ``SearchIndex`` protocol and exact brute force."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Neighbors:
    """k nearest items per query: ``indices`` int64 (Q, k) into the indexed vectors, nearest first,
    and their Euclidean ``distances`` float32 (Q, k)."""

    indices: np.ndarray
    distances: np.ndarray


class SearchIndex(Protocol):
    """Euclidean k-NN over N vectors of dimension D."""

    @property
    def size(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> Neighbors:
        """``queries``: float32 (Q, D) → the min(k, N) nearest items of each."""
        ...


class BruteForceIndex:
    """Exact search with numpy: one (Q, N) distance matrix per block of queries."""

    def __init__(self, vectors: np.ndarray, *, block: int = 1024) -> None:
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be (N, D), got {vectors.shape}")
        self._v = vectors
        self._sq = (vectors.astype(np.float64) ** 2).sum(1)
        self._block = block

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
            q = queries[s : s + self._block].astype(np.float64)
            d2 = (q * q).sum(1)[:, None] + self._sq[None, :] - 2.0 * q @ self._v.T.astype(np.float64)
            part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < self.size else np.tile(np.arange(self.size), (len(q), 1))
            pd = np.take_along_axis(d2, part, 1)
            order = np.lexsort((part, pd), axis=1)  # by distance, ties by index: deterministic
            idx[s : s + len(q)] = np.take_along_axis(part, order, 1)
            dist[s : s + len(q)] = np.sqrt(np.maximum(np.take_along_axis(pd, order, 1), 0.0))
        return Neighbors(idx, dist)

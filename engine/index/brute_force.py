"""The ``brute_force`` backend: exact k-NN with numpy, and the ground truth the other backends are measured against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.index.base import BuildRequest, Neighbors, checked_queries


class BruteForceIndex:
    """Exact search with numpy: one (Q, N) distance matrix per block of queries."""

    kind = "brute_force"

    def __init__(self, vectors: np.ndarray, *, block: int = 0) -> None:
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be (N, D), got {vectors.shape}")
        self._v = vectors
        self._sq = np.einsum("ij,ij->i", vectors, vectors)
        # queries per block: the (block, N) distance matrix stays under ~256 MB (64 queries at N = 1M)
        self._block = block or max(1, min(1024, (1 << 26) // max(1, len(vectors))))

    @classmethod
    def build(cls, settings: Any, request: BuildRequest) -> tuple[BruteForceIndex, None]:
        """Exact search over ``request.vectors``; no settings, nothing to measure (its recall is 1)."""
        return cls(request.vectors), None

    def save(self, folder: Path) -> None:
        """Nothing beyond the vectors, which the caller stores."""

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, params: dict, *, model_fingerprint: str = "") -> BruteForceIndex:
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
        queries, k = checked_queries(queries, self.dim, k, self.size)
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

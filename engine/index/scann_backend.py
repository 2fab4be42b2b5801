"""The ``scann`` backend: ScaNN (a k-means tree, asymmetric hashing, exact reordering), exact search for small catalogs.

The only module importing ``scann``. ``ScannIndex.build`` is the untuned build (the settings as
given); the backend's tuner, ``engine.index.tuning.tune_index``, chooses between exact search and
ScaNN settings for a recall target, measured against exact search.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from engine.index.base import BuildRequest, Neighbors, SearchIndex, checked_queries
from engine.index.brute_force import BruteForceIndex


@dataclass(frozen=True)
class ScannParams:
    """ScaNN settings; 0 means derived from the number of items N (see ``ScannIndex.derive``).

    brute_force_below: under this N, exact search is as fast and is used instead.
    leaves / leaves_to_search: the k-means tree's partitions, and how many a query scans.
    reorder: how many candidates of the quantised scoring are re-scored exactly (float32).
    dims_per_block / anisotropic_threshold: asymmetric hashing (4-bit codes of ``dims_per_block``
        dimensions each; the anisotropic loss's threshold, ``None`` = plain k-means quantisation).
    quantize_centroids: score the tree's centroids in int8 (faster leaf choice with many leaves).
    training_sample / training_threads: the tree's k-means training sample (0 = 125 per leaf, at
        least 100,000: fewer per leaf leaves clusters merged and recall capped), and build threads
        (0 = all cores).
    metric: ``dot_product`` (unit-norm vectors: residual quantisation; same order as Euclidean) or
        ``squared_l2``; empty = chosen from the vectors when built.
    """

    brute_force_below: int = 20_000
    leaves: int = 0
    leaves_to_search: int = 0
    reorder: int = 0
    dims_per_block: int = 2
    anisotropic_threshold: float | None = 0.2
    training_sample: int = 0
    training_threads: int = 0
    quantize_centroids: bool = False
    metric: str = ""

    def __post_init__(self) -> None:
        if min(self.brute_force_below, self.leaves, self.leaves_to_search, self.reorder, self.training_threads) < 0:
            raise ValueError(f"ScaNN settings must be >= 0: {self}")
        if self.dims_per_block < 1:
            raise ValueError(f"dims_per_block must be >= 1: {self}")
        if self.metric not in ("", "dot_product", "squared_l2"):
            raise ValueError(f"metric must be dot_product or squared_l2, got {self.metric!r}")


def is_unit_norm(vectors: np.ndarray, tol: float = 1e-3) -> bool:
    """Whether every row of ``vectors`` float32 (N, D) has Euclidean norm 1 (± ``tol``)."""
    return bool(len(vectors)) and float(np.max(np.abs(np.einsum("ij,ij->i", vectors, vectors) - 1.0))) <= 2 * tol


class ScannIndex:
    """ScaNN: tree partitioning + asymmetric hashing + exact reordering.

    Unit-norm vectors are indexed with dot-product scoring (which orders neighbours as Euclidean
    distance does, and lets ScaNN quantise residuals); other vectors with squared L2. Distances
    returned are Euclidean either way, computed from ScaNN's exact reordering scores.
    ``leaves_to_search`` and ``reorder`` can be changed per call without rebuilding.
    """

    kind = "scann"

    def __init__(self, vectors: np.ndarray, params: ScannParams = ScannParams(), *, max_k: int = 100, _searcher=None) -> None:
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError(f"vectors must be (N >= 2, D), got {vectors.shape}")
        self._n, self._d = vectors.shape
        self._sq = np.einsum("ij,ij->i", vectors, vectors)
        self._threads = os.cpu_count() or 1
        if _searcher is not None:  # loaded from disk
            self.params = replace(params, metric=params.metric or "squared_l2")  # indexes saved before the metric was stored
            self._searcher = _searcher
            return
        # the pybind searcher: `import scann` would load TensorFlow too
        from scann.scann_ops.py import scann_ops_pybind

        self.params = self.derive(self._n, params, vectors)
        p = self.params
        builder = scann_ops_pybind.builder(vectors, max(1, min(max_k, self._n)), p.metric)
        builder = builder.tree(num_leaves=p.leaves, num_leaves_to_search=p.leaves_to_search,
                               training_sample_size=p.training_sample, quantize_centroids=p.quantize_centroids)
        threshold = float("nan") if p.anisotropic_threshold is None else p.anisotropic_threshold
        builder = builder.score_ah(p.dims_per_block, anisotropic_quantization_threshold=threshold,
                                   training_sample_size=min(100_000, self._n))
        builder = builder.reorder(p.reorder).set_n_training_threads(p.training_threads or self._threads)

        self._searcher = builder.build()  # not reproducible bit for bit: ScaNN's k-means takes no seed (google-research#1747)

    @classmethod
    def build(cls, params: ScannParams, request: BuildRequest) -> tuple[SearchIndex, None]:
        """Untuned: exact search (``BruteForceIndex``) under ``params.brute_force_below`` items, where it is
        as fast, else ScaNN with ``params`` (0 = derived from N, see ``derive``); nothing measured."""
        if len(request.vectors) < max(2, params.brute_force_below):
            return BruteForceIndex(request.vectors), None
        return cls(request.vectors, params), None

    def save(self, folder: Path) -> None:
        """ScaNN's own files (its config and assets, paths relative to ``folder``) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self._searcher.serialize(str(folder), relative_path=True)

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, params: dict, *, model_fingerprint: str = "") -> ScannIndex:
        from scann.scann_ops.py import scann_ops_pybind

        searcher = scann_ops_pybind.load_searcher(str(folder))
        return cls(vectors, ScannParams(**params), _searcher=searcher)

    def describe(self) -> dict:
        return asdict(self.params)

    @staticmethod
    def derive(n: int, params: ScannParams, vectors: np.ndarray | None = None) -> ScannParams:
        """Fill the automatic settings: leaves ≈ sqrt(N), search 1/10 of them (at least 16), reorder 250,
        a training sample of 125 per leaf (at least 100,000, at most N), dot-product scoring for
        unit-norm ``vectors``."""
        leaves = params.leaves or max(2, min(n // 20, int(round(np.sqrt(n)))))
        to_search = min(leaves, params.leaves_to_search or max(16, leaves // 10))
        sample = min(n, params.training_sample or max(100_000, 125 * leaves))
        metric = params.metric or ("dot_product" if vectors is not None and is_unit_norm(vectors) else "squared_l2")
        return replace(params, leaves=leaves, leaves_to_search=to_search, reorder=params.reorder or 250, training_sample=sample,
                       metric=metric)

    def mutate(self, remove: np.ndarray | list[int], add: np.ndarray) -> np.ndarray:
        """Delete rows ``remove`` and append ``add`` float32 (A, D) in place, with ScaNN's own mutation
        (points are assigned to the existing tree and codebooks: nothing is retrained).

        ScaNN fills a deleted row with its last one, so the rows move: returns ``order`` int64
        (N - R + A,), for each new row the old row it holds, or ``N + j`` for ``add[j]``. The caller
        keeps its vectors and items in that order."""
        add = np.ascontiguousarray(add, np.float32).reshape(-1, self._d)
        gone = sorted({int(r) for r in remove}, reverse=True)
        if gone and (gone[0] >= self._n or gone[-1] < 0):
            raise ValueError(f"rows to remove must be in [0, {self._n}), got {gone[-1]}..{gone[0]}")
        if self._n - len(gone) + len(add) < 2:
            raise ValueError("a ScaNN index keeps at least 2 rows; rebuild it as exact search instead")
        order = list(range(self._n))
        raw = self._searcher.searcher if hasattr(self._searcher, "searcher") else self._searcher
        for row in gone:  # highest first: the row moved into a hole is never one still to delete
            raw.delete([row])
            last = order.pop()
            if row < len(order):
                order[row] = last
        if len(add):
            raw.upsert([None] * len(add), add, min(len(add), 256))
            order += range(self._n, self._n + len(add))
        order_arr = np.asarray(order, np.int64)
        self._sq = np.concatenate([self._sq, np.einsum("ij,ij->i", add, add)])[order_arr]  # squared norms follow their rows
        self._n = len(order_arr)
        return order_arr

    @property
    def size(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._d

    @property
    def threads(self) -> int:
        return self._threads

    def set_threads(self, threads: int) -> None:
        """Threads for batches of queries (``search_batched_parallel``); 1 = single-threaded."""
        self._threads = max(1, threads)
        self._searcher.set_num_threads(self._threads)

    def search(self, queries: np.ndarray, k: int, *, leaves_to_search: int = 0, reorder: int = 0) -> Neighbors:
        """As ``SearchIndex.search``; ``leaves_to_search`` / ``reorder`` > 0 override the index's own for
        this call. One query goes through ScaNN's single-query path; batches of 256 or more are split
        over ``set_threads`` threads."""
        queries, k = checked_queries(queries, self._d, k, self._n)
        lts = leaves_to_search or self.params.leaves_to_search
        pre = max(k, reorder or self.params.reorder)
        dot = self.params.metric == "dot_product"
        if len(queries) == 1:  # the service's case: kept lean, it is a good part of a query's time on small catalogs
            i, s = self._searcher.search(queries[0], k, pre, lts)
            idx = i.astype(np.int64)[None]
            d2 = (self._sq[i] - 2.0 * s + float(np.dot(queries[0], queries[0])))[None] if dot else s[None]
        else:
            if self._threads > 1 and len(queries) >= 256:
                i, s = self._searcher.search_batched_parallel(queries, k, pre, lts)
            else:
                i, s = self._searcher.search_batched(queries, k, pre, lts)
            idx = np.asarray(i, np.int64)
            s = np.asarray(s, np.float32)
            # ScaNN returns q·x for dot product: |q - x|² = |q|² + |x|² - 2 q·x
            d2 = np.einsum("ij,ij->i", queries, queries)[:, None] + self._sq[idx] - 2.0 * s if dot else s
        return Neighbors(idx, np.sqrt(np.maximum(d2, 0.0, dtype=np.float32)))

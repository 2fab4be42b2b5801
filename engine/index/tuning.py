"""The ``scann`` backend's tuner: exact search or ScaNN settings for a recall target, measured on the data being indexed.

``tune_index(vectors, queries)`` builds a few ScaNN trees (leaves × dims per block × anisotropic
threshold), sweeps the per-query knobs on each without rebuilding (leaves searched, reorder depth),
measures recall@k of every setting against exact search on tuning queries (ties with the k-th
exact neighbour count as hits: identical vectors are common in catalogs), and keeps the setting
that reaches the target at the highest single-thread throughput (one query per call, as the
service searches). Exact search is kept when the catalog is under ``brute_force_below`` items, when
it is measured as fast as the best ScaNN setting, or when no setting reaches the target; the
returned ``Tuning`` says which and why, with the measured recall and queries per second, and goes
into the index manifest.

Tuning queries: the given ones (e.g. embeddings of scene crops for the products index), else a
seeded sample of the indexed vectors themselves, which stay in the index: each such query's own row
is left out of both its exact and approximate neighbours (leave-one-out), so recall@k counts the k
nearest *other* items. Given the seed, the query sample and the grids searched are reproducible, but
ScaNN's own k-means takes no seed (google-research/google-research#1747), so two builds of the same
vectors can differ by a point or two of recall; the recall reported is always measured on the
index returned. The choice among settings that reach the target follows measured speed, with
settings within ``tie_margin`` of the fastest counted as equal and the least work per query taken
among them (``clock`` is injectable, so with a fake clock the choice depends on recall alone).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from engine.index.base import SearchIndex
from engine.index.brute_force import BruteForceIndex
from engine.index.scann_backend import ScannIndex, ScannParams

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class TuningConfig:
    """How to tune.

    target_recall: recall@k against exact search the chosen setting must reach (0 < r <= 1).
    k: neighbours per query the recall is measured at.
    n_queries: tuning queries sampled from the vectors when none are given (and the cap on given ones).
    timing_queries: queries per speed measurement (best of ``timing_repeats`` passes).
    budget_s: time allowed for building trees; at least one is always built, the next only when
        its estimated build fits in what is left.
    leaves_per_sqrt_n: tree sizes tried, as multiples of sqrt(N), in order (cheapest to build
        first: on 1M x 256, sqrt(N) leaves built in half the time of 2 sqrt(N) and searched faster).
    dims_per_block / anisotropic_thresholds: quantisation tried, the first of each on every tree
        size, the other combinations on the best size (``None``: plain k-means quantisation).
    leaves_to_search / reorders: the per-query grids swept on each tree.
    tie_margin: throughputs within this fraction of the fastest count as equal.
    allow_exact: False keeps the best ScaNN index even where exact search is as fast (benchmarks).
    seed: for the query sample.
    """

    target_recall: float = 0.95
    k: int = 10
    n_queries: int = 1000
    timing_queries: int = 300
    timing_repeats: int = 5
    budget_s: float = 300.0
    leaves_per_sqrt_n: tuple[float, ...] = (1.0, 2.0, 0.5)
    dims_per_block: tuple[int, ...] = (2, 1)
    anisotropic_thresholds: tuple[float | None, ...] = (0.2, None)
    leaves_to_search: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
    reorders: tuple[int, ...] = (20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
    tie_margin: float = 0.05
    allow_exact: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}")
        if min(self.k, self.n_queries, self.timing_queries, self.timing_repeats) < 1:
            raise ValueError("k, n_queries, timing_queries and timing_repeats must be >= 1")
        if self.budget_s < 0 or not self.leaves_per_sqrt_n or not self.dims_per_block or not self.anisotropic_thresholds:
            raise ValueError("budget_s must be >= 0 and the tree grids non-empty")
        if not self.leaves_to_search or not self.reorders or min(self.leaves_to_search + self.reorders) < 1:
            raise ValueError("the leaves_to_search and reorders grids must be non-empty and >= 1")


@dataclass(frozen=True)
class Setting:
    """One measured setting: tree (leaves, dims per block, threshold) and per-query knobs."""

    leaves: int
    dims_per_block: int
    anisotropic_threshold: float | None
    leaves_to_search: int
    reorder: int
    recall: float
    qps_one: float = 0.0
    qps_batched: float = 0.0
    work: float = 0.0  # estimated arithmetic per query, for ties


@dataclass(frozen=True)
class Tuning:
    """What was chosen and why, as stored in the index manifest (``asdict``).

    chosen: ``scann`` or ``brute_force``. recall: recall@k of the chosen setting on the tuning
    queries (1.0 for exact search). qps_one / qps_batched: single-thread queries per second, one
    query per call / all tuning queries in one call. exact_qps: exact search, single thread, one
    query per call. trees: each tree built, its build seconds and its fastest setting reaching the
    target (``None`` if none did).
    """

    chosen: str
    reason: str
    target_recall: float
    k: int
    recall: float
    qps_one: float
    qps_batched: float
    exact_qps: float
    queries: str
    n_queries: int
    seed: int
    seconds: float
    params: dict = field(default_factory=dict)
    trees: list = field(default_factory=list)

    def summary(self) -> dict:
        """The manifest record without the per-tree log (for ``/healthz``)."""
        return {k: v for k, v in asdict(self).items() if k != "trees"}


def tune_index(vectors: np.ndarray, queries: np.ndarray | None = None, config: TuningConfig = TuningConfig(),
               params: ScannParams = ScannParams(), *, queries_label: str = "given query vectors",
               clock: Clock = time.perf_counter) -> tuple[SearchIndex, Tuning]:
    """The fastest index reaching ``config.target_recall`` on ``vectors`` float32 (N, D).

    ``queries``: float32 (Q, D) tuning queries (e.g. real query embeddings); ``None`` samples them
    from ``vectors`` (leave-one-out); ``queries_label`` names them in the record. Non-zero ``params.leaves`` / ``leaves_to_search`` / ``reorder``
    fix that knob instead of searching it; ``params.brute_force_below`` keeps small catalogs exact.
    ``clock`` is injectable so tests can make the choice independent of machine speed.
    """
    vectors = np.ascontiguousarray(vectors, np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (N, D), got {vectors.shape}")
    t0 = clock()
    n = len(vectors)
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    exact = BruteForceIndex(vectors)
    if queries is not None and len(queries):
        q = np.ascontiguousarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != vectors.shape[1]:
            raise ValueError(f"tuning queries must be (Q, {vectors.shape[1]}), got {q.shape}")
        given = len(q)
        if given > cfg.n_queries:
            q = q[np.sort(rng.choice(given, cfg.n_queries, replace=False))]
        self_rows = None
        source = f"{len(q)} {queries_label}" + (f" (sampled from {given} with seed {cfg.seed})" if given > len(q) else "")
    else:
        self_rows = np.sort(rng.choice(n, min(cfg.n_queries, n), replace=False)) if n else np.zeros(0, np.int64)
        q = vectors[self_rows]
        source = f"{len(q)} indexed vectors sampled with seed {cfg.seed} (leave-one-out: each query's own row excluded)"
    k = min(cfg.k, max(1, n - (self_rows is not None)))
    base = dict(target_recall=cfg.target_recall, k=k, queries=source, n_queries=len(q), seed=cfg.seed)
    if n == 0 or len(q) == 0:
        return exact, Tuning("brute_force", "empty index: nothing to tune", recall=1.0, qps_one=0.0, qps_batched=0.0, exact_qps=0.0,
                             seconds=0.0, **base)
    exact_qps = _exact_qps(exact, q, k, cfg, clock)

    def done(chosen: str, reason: str, index: SearchIndex, best: Setting | None, trees: list) -> tuple[SearchIndex, Tuning]:
        seconds = round(clock() - t0, 2)
        if best is None:
            batched = _exact_qps(exact, q, k, cfg, clock, batched=True)
            tuning = Tuning(chosen, reason, recall=1.0, qps_one=round(exact_qps, 1), qps_batched=round(batched, 1),
                            exact_qps=round(exact_qps, 1), seconds=seconds, trees=trees, **base)
        else:
            tuning = Tuning(chosen, reason, recall=round(best.recall, 4), qps_one=round(best.qps_one, 1),
                            qps_batched=round(best.qps_batched, 1), exact_qps=round(exact_qps, 1), seconds=seconds,
                            params=index.describe(), trees=trees, **base)
        logger.info("index of %d vectors: %s (%s)", n, chosen, reason)
        return index, tuning

    if n < max(2, params.brute_force_below if cfg.allow_exact else 2):
        return done("brute_force", f"{n} items < brute_force_below ({params.brute_force_below}): exact search, "
                    f"measured {exact_qps:.0f} q/s single-thread, recall 1.0", exact, None, [])

    truth = _neighbours(exact.search(q, k + 1), self_rows, k)
    best_index, best, trees = _sweep_trees(vectors, q, self_rows, truth, k, cfg, params, clock, t0)
    if best is None:
        return done("brute_force", f"no ScaNN setting tried reached recall@{k} >= {cfg.target_recall} on the tuning queries: "
                    f"exact search, measured {exact_qps:.0f} q/s single-thread", exact, None, trees)
    if cfg.allow_exact and exact_qps * (1 + cfg.tie_margin) >= best.qps_one:
        return done("brute_force", f"exact search is as fast: {exact_qps:.0f} q/s single-thread against ScaNN's best "
                    f"{best.qps_one:.0f} q/s at recall@{k} {best.recall:.3f}", exact, None, trees)
    best_index.params = replace(best_index.params, leaves_to_search=best.leaves_to_search, reorder=best.reorder)
    return done("scann", f"fastest setting reaching recall@{k} >= {cfg.target_recall}: {best.qps_one:.0f} q/s single-thread "
                f"({best.qps_one / max(exact_qps, 1e-9):.1f}x exact search's {exact_qps:.0f})", best_index, best, trees)


def _sweep_trees(vectors: np.ndarray, q: np.ndarray, self_rows: np.ndarray | None, truth: np.ndarray, k: int, cfg: TuningConfig,
                 params: ScannParams, clock: Clock, t0: float) -> tuple[ScannIndex | None, Setting | None, list]:
    """Build trees in order of promise while the budget lasts; the best index and setting, and a log."""
    n = len(vectors)
    sizes = [params.leaves] if params.leaves else _leaf_counts(n, cfg.leaves_per_sqrt_n)
    shapes = [(leaves, cfg.dims_per_block[0], cfg.anisotropic_thresholds[0]) for leaves in sizes]
    best_index, best, log, last_build = None, None, [], 0.0
    i = 0
    while i < len(shapes):
        leaves, dpb, thr = shapes[i]
        i += 1
        spent = clock() - t0
        estimate = last_build * max(1.0, leaves / log[-1]["leaves"]) ** 0.5 if log else 0.0
        if log and spent + estimate > cfg.budget_s:
            logger.info("tuning budget (%.0fs) reached after %.0fs: not building %d leaves (about %.0fs)", cfg.budget_s, spent, leaves, estimate)
            break
        b0 = clock()
        index = ScannIndex(vectors, replace(params, leaves=leaves, dims_per_block=dpb, anisotropic_threshold=thr,
                                            leaves_to_search=params.leaves_to_search or 1, reorder=params.reorder or max(cfg.reorders)))
        last_build = clock() - b0
        found = _sweep_knobs(index, vectors, q, self_rows, truth, k, cfg, params, clock)
        record = {"leaves": leaves, "dims_per_block": dpb, "anisotropic_threshold": thr, "build_s": round(last_build, 2),
                  "best": _round(asdict(found)) if found else None}
        log.append(record)
        logger.info("tree %d leaves, %d dims/block, threshold %s: built in %.1fs; %s", leaves, dpb, thr, last_build,
                    f"best {found.qps_one:.0f} q/s at {found.leaves_to_search} leaves searched, reorder {found.reorder}, "
                    f"recall {found.recall:.3f}" if found else "target not reached")
        if found and (best is None or _faster(found, best, cfg.tie_margin)):
            best_index, best = index, found
        else:
            del index
        if i == len(sizes) and best is not None:  # then quantisation variants on the best tree size
            shapes += [(best.leaves, d, t) for d in cfg.dims_per_block for t in cfg.anisotropic_thresholds
                       if (d, t) != (cfg.dims_per_block[0], cfg.anisotropic_thresholds[0])]
    return best_index, best, log


def _sweep_knobs(index: ScannIndex, vectors: np.ndarray, q: np.ndarray, self_rows: np.ndarray | None, truth: np.ndarray, k: int, cfg: TuningConfig,
                 params: ScannParams, clock: Clock) -> Setting | None:
    """For each number of leaves searched (ascending), the smallest reorder depth reaching the target;
    each such pair timed, the fastest returned (``None`` if none reaches the target)."""
    p = index.params
    grid_l = [params.leaves_to_search] if params.leaves_to_search else [x for x in cfg.leaves_to_search if x <= max(1, p.leaves // 2)]
    grid_r = [params.reorder] if params.reorder else [r for r in cfg.reorders if r >= k] or [k]
    extra = self_rows is not None

    def recall(lts: int, ro: int) -> float:
        got = index.search(q, k + extra, leaves_to_search=lts, reorder=ro + extra).indices
        return recall_at_k(_neighbours_of(got, self_rows, k), truth, queries=q, vectors=vectors)

    candidates, hi, stalled = [], len(grid_r) - 1, 0
    for lts in grid_l:
        if recall(lts, grid_r[hi]) < cfg.target_recall:
            continue  # not even the deepest reorder reaches the target: search more leaves
        lo_i, hi_i = 0, hi  # smallest reorder that reaches the target (recall grows with reorder)
        while lo_i < hi_i:
            mid = (lo_i + hi_i) // 2
            if recall(lts, grid_r[mid]) >= cfg.target_recall:
                hi_i = mid
            else:
                lo_i = mid + 1
        stalled = stalled + 1 if candidates and lo_i == hi else 0
        hi = lo_i
        candidates.append((lts, grid_r[hi], recall(lts, grid_r[hi])))
        if hi == 0 or stalled >= 2:
            break  # more leaves no longer lower the reorder depth: only slower
    timed = []
    for lts, ro, r in candidates:
        one, batched = _qps(index, q, k + extra, cfg, clock, leaves_to_search=lts, reorder=ro + extra)
        work = (p.leaves + ro) * index.dim + lts * (index.size / p.leaves) * index.dim / p.dims_per_block  # centroids, reorder, AH lookups
        timed.append(Setting(p.leaves, p.dims_per_block, p.anisotropic_threshold, lts, ro, r, one, batched, work))
        logger.debug("%d leaves: search %d, reorder %d -> recall %.4f, %.0f q/s one by one, %.0f batched", p.leaves, lts, ro, r, one, batched)
    best = None
    for s in timed:
        if best is None or _faster(s, best, cfg.tie_margin):
            best = s
    return best


def _faster(a: Setting, b: Setting, margin: float) -> bool:
    """``a`` is clearly faster than ``b``, or as fast (within ``margin``) with less work per query."""
    if a.qps_one > b.qps_one * (1 + margin):
        return True
    if b.qps_one > a.qps_one * (1 + margin):
        return False
    return (a.work, -a.recall) < (b.work, -b.recall)


def _leaf_counts(n: int, multiples: Sequence[float]) -> list[int]:
    """Tree sizes: multiples of sqrt(N), at least 2 and leaving at least 20 items per leaf on average."""
    out = []
    for m in multiples:
        leaves = max(2, min(n // 20, int(round(m * math.sqrt(n) / 10.0)) * 10 or 2))
        if leaves not in out:
            out.append(leaves)
    return out


def _exact_qps(exact: BruteForceIndex, q: np.ndarray, k: int, cfg: TuningConfig, clock: Clock, batched: bool = False) -> float:
    """Exact search on one BLAS thread, one query per call (about 0.5 s of queries) or in one batch
    (up to 256 queries); best of the passes."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        if batched:
            m = min(256, len(q))
            return _best_rate(lambda: exact.search(q[:m], k), m, cfg.timing_repeats, clock)
        t = clock()
        exact.search(q[:1], k)
        one = max(clock() - t, 1e-6)
        m = int(max(1, min(cfg.timing_queries, len(q), 0.5 / one)))
        return _best_rate(lambda: [exact.search(q[i : i + 1], k) for i in range(m)], m, cfg.timing_repeats, clock)


def _qps(index: ScannIndex, q: np.ndarray, k: int, cfg: TuningConfig, clock: Clock, **knobs: int) -> tuple[float, float]:
    """Single-thread queries per second of ``index`` with ``knobs``: one query per call, and one batch."""
    m = min(cfg.timing_queries, len(q))
    threads = index.threads
    index.set_threads(1)
    try:
        one = _best_rate(lambda: [index.search(q[i : i + 1], k, **knobs) for i in range(m)], m, cfg.timing_repeats, clock)
        batched = _best_rate(lambda: index.search(q, k, **knobs), len(q), cfg.timing_repeats, clock)
    finally:
        index.set_threads(threads)
    return one, batched


def _best_rate(run: Callable[[], object], count: int, repeats: int, clock: Clock) -> float:
    best = math.inf
    for _ in range(repeats):
        t = clock()
        run()
        best = min(best, clock() - t)
    return count / max(best, 1e-9)


def _neighbours(nn, self_rows: np.ndarray | None, k: int) -> np.ndarray:
    return _neighbours_of(nn.indices, self_rows, k)


def _neighbours_of(indices: np.ndarray, self_rows: np.ndarray | None, k: int) -> np.ndarray:
    """The first ``k`` neighbours of each row, without the query's own row when queries are indexed vectors."""
    if self_rows is None:
        return indices[:, :k]
    out = np.empty((len(indices), k), np.int64)
    for i, (row, own) in enumerate(zip(indices, self_rows)):
        kept = row[row != own][:k]
        out[i, : len(kept)] = kept
        out[i, len(kept) :] = -1
    return out


def recall_at_k(approx: np.ndarray, exact: np.ndarray, *, queries: np.ndarray | None = None, vectors: np.ndarray | None = None) -> float:
    """Mean share of each row of ``exact`` int (Q, k) (nearest first, -1 padded) found by ``approx``
    int (Q, k') in the same row.

    With ``queries`` float32 (Q, D) and the indexed ``vectors`` float32 (N, D), ties count: a
    returned item as near as the k-th exact neighbour is a hit too, so identical vectors (one photo
    under several product ids) do not make exact search look approximate.
    """
    if queries is None or vectors is None:
        hits = total = 0
        for a, e in zip(approx, exact):
            e = e[e >= 0]
            hits += len(np.intersect1d(a, e))
            total += len(e)
        return hits / max(total, 1)
    valid = exact >= 0
    counts = valid.sum(1)
    last = np.take_along_axis(exact, np.maximum(counts - 1, 0)[:, None], 1)[:, 0]
    kth = np.linalg.norm(queries - vectors[last], axis=1)
    a = np.where(approx >= 0, approx, 0)
    d = np.linalg.norm(queries[:, None, :] - vectors[a], axis=2)
    near = (d <= kth[:, None] * (1 + 1e-5) + 1e-6) & (approx >= 0)
    return float(np.minimum(near.sum(1), counts).sum() / max(counts.sum(), 1))


def _round(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}

"""Retrieval metrics as pure numpy functions: ranks, recall@k, distance_accuracy per category.

Ties are counted pessimistically: an item at the same distance as the true one ranks ahead of it,
so a collapsed model (all distances equal) scores chance or worse, never perfect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def euclidean_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between rows: float (N, D) x float (M, D) → float64 (N, M)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def true_ranks(dist: np.ndarray, true_col: np.ndarray) -> np.ndarray:
    """1-based rank of each row's true column: ``dist`` float (N, M), ``true_col`` int (N,) → int (N,).

    rank = number of columns whose distance is <= the true column's (ties rank ahead).
    """
    dist = np.asarray(dist, np.float64)
    true_col = np.asarray(true_col, np.int64)
    if dist.ndim != 2 or true_col.shape != (dist.shape[0],):
        raise ValueError(f"dist must be (N, M) and true_col (N,), got {dist.shape} and {true_col.shape}")
    if dist.shape[0] == 0:
        return np.zeros(0, np.int64)
    if true_col.min() < 0 or true_col.max() >= dist.shape[1]:
        raise ValueError("true_col holds a column outside the distance matrix")
    own = dist[np.arange(len(dist)), true_col]
    return (dist <= own[:, None]).sum(1).astype(np.int64)


def group_min(dist: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Per row, the smallest distance within each group of columns.

    ``dist`` float (N, M); ``groups`` int (M,) in [0, n_groups) → float64 (N, n_groups); a group
    with no column is ``inf`` (it can never be found). Used to rank products by their best image,
    and scenes by their best crop.
    """
    dist = np.asarray(dist, np.float64)
    groups = np.asarray(groups, np.int64)
    if dist.ndim != 2 or groups.shape != (dist.shape[1],):
        raise ValueError(f"dist must be (N, M) and groups (M,), got {dist.shape} and {groups.shape}")
    if groups.size and (groups.min() < 0 or groups.max() >= n_groups):
        raise ValueError(f"groups must lie in [0, {n_groups})")
    out = np.full((dist.shape[0], n_groups), np.inf)
    if groups.size == 0 or dist.shape[0] == 0:
        return out
    order = np.argsort(groups, kind="stable")
    g_sorted = groups[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    out[:, g_sorted[starts]] = np.minimum.reduceat(dist[:, order], starts, axis=1)
    return out


def rank_of(dist_row: np.ndarray, col: int) -> float:
    """1-based pessimistic rank of column ``col`` in one row of distances; ``inf`` when it is ``inf``."""
    own = dist_row[col]
    if not np.isfinite(own):
        return float("inf")
    return float((dist_row <= own).sum())


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of ranks <= k; NaN for an empty set (no queries means no evidence, not 0).

    A rank may be ``inf`` (the item was never found, e.g. no crop of the right class): a miss at every k.
    """
    ranks = np.asarray(ranks)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if ranks.size == 0:
        return float("nan")
    return float((ranks <= k).mean())


def recall_curve(ranks: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """``{k: recall_at_k(ranks, k)}`` for each k (k may exceed the number of items: all found ranks count)."""
    return {int(k): recall_at_k(ranks, int(k)) for k in ks}


def bootstrap_recall(
    ranks: np.ndarray, groups: Sequence[str], ks: Sequence[int], *, other: np.ndarray | None = None,
    n: int = 2000, seed: int = 0, level: float = 0.95,
) -> dict[int, tuple[float, float]]:
    """Percentile bootstrap interval of recall@k, resampling whole groups (scenes), not pairs.

    Pairs of one scene share a photo, so they are not independent; resampling scenes keeps that.
    With ``other`` (ranks of another model on the same pairs) the interval is of the paired
    difference recall(ranks) - recall(other). ``(nan, nan)`` when there are no ranks.
    """
    ranks = np.asarray(ranks, np.float64)
    if other is not None:
        other = np.asarray(other, np.float64)
        if other.shape != ranks.shape:
            raise ValueError(f"paired ranks must have the same shape, got {ranks.shape} and {other.shape}")
    if len(groups) != len(ranks):
        raise ValueError(f"one group per rank: {len(groups)} groups for {len(ranks)} ranks")
    if ranks.size == 0:
        return {int(k): (float("nan"), float("nan")) for k in ks}
    hits = np.stack([(ranks <= k).astype(np.float64) - ((other <= k).astype(np.float64) if other is not None else 0.0) for k in ks], axis=1)
    lo, hi = bootstrap_mean(hits, groups, n=n, seed=seed, level=level)
    return {int(k): (float(lo[i]), float(hi[i])) for i, k in enumerate(ks)}


def bootstrap_mean(values: np.ndarray, groups: Sequence[str], *, n: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of ``values`` (``(N,)`` or ``(N, M)``: M statistics
    per item), resampling whole ``groups`` (one per item, e.g. its scene) with replacement.

    Returns ``(lo, hi)``, each ``(M,)`` (``()`` for 1-d ``values``). A recall is the mean of hits, a paired
    difference the mean of hit differences, a seed-mean difference the mean of per-item seed means.
    """
    values = np.asarray(values, np.float64)
    if len(groups) != len(values):
        raise ValueError(f"one group per item: {len(groups)} groups for {len(values)} items")
    if values.size == 0:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan.copy()
    names, gid = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(n, len(names)))
    weights = np.stack([np.bincount(d, minlength=len(names)) for d in draws])[:, gid].astype(np.float64)  # (n, items)
    stats = (weights @ values.reshape(len(values), -1)) / weights.sum(1, keepdims=True)  # (n, M)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    lo, hi = np.quantile(stats, lo_q, axis=0), np.quantile(stats, hi_q, axis=0)
    return lo.reshape(values.shape[1:]), hi.reshape(values.shape[1:])


@dataclass(frozen=True)
class DistanceAccuracy:
    """``distance_accuracy`` (top-1) and ``distance_accuracy_top_3``, macro-averaged over categories."""

    top1: float
    top3: float
    per_category: dict[str, tuple[float, float, int, int]]  # type -> (top1, top3, n_queries, n_products)


def distance_accuracy(
    query_emb: np.ndarray,
    query_product: Sequence[str],
    product_emb: np.ndarray,
    product_ids: Sequence[str],
    product_types: Sequence[str],
) -> DistanceAccuracy:
    """Per category: distance matrix of its queries x the distinct products those queries show.

    ``query_emb``: float (N, D) with ``query_product[i]`` its true product id.
    ``product_emb``: float (M, D), one row per product, with ids and types.
    A category counts when it has at least 2 products among its queries (one product is trivial).
    Returns the shares of rows whose own product is nearest (top1) / within the nearest 3 (top3),
    averaged over categories; NaN when no category counts.
    """
    index = {pid: i for i, pid in enumerate(product_ids)}
    missing = [p for p in query_product if p not in index]
    if missing:
        raise ValueError(f"query products without an embedding: {sorted(set(missing))[:5]}")
    qtypes = np.array([product_types[index[p]] for p in query_product])
    qprod = np.asarray(query_product)
    per: dict[str, tuple[float, float, int, int]] = {}
    for t in sorted(set(qtypes.tolist())):
        rows = np.flatnonzero(qtypes == t)
        prods = sorted(set(qprod[rows].tolist()))
        if len(prods) < 2:
            continue
        cols = np.array([index[p] for p in prods])
        dist = euclidean_distances(query_emb[rows], product_emb[cols])
        col_of = {p: j for j, p in enumerate(prods)}
        ranks = true_ranks(dist, np.array([col_of[p] for p in qprod[rows]]))
        per[t] = (recall_at_k(ranks, 1), recall_at_k(ranks, 3), len(rows), len(prods))
    if not per:
        return DistanceAccuracy(float("nan"), float("nan"), {})
    return DistanceAccuracy(
        float(np.mean([v[0] for v in per.values()])), float(np.mean([v[1] for v in per.values()])), per
    )


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (N,) for ``labels`` (N,) in {0, 1}: the probability that a
    random positive scores above a random negative (ties count half). ``nan`` without both classes."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties (1-based)
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error of ``probabilities`` (N,) against ``labels`` (N,) in {0, 1} over
    ``bins`` equal-width bins, and the bins (``lo``, ``hi``, ``count``, mean ``predicted``, ``observed``
    frequency) for a reliability diagram. ECE = sum over bins of count/N * |observed - predicted|."""
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(labels, np.float64)
    if len(p) != len(y):
        raise ValueError(f"{len(p)} probabilities for {len(y)} labels")
    which = np.minimum((p * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        row = {"lo": b / bins, "hi": (b + 1) / bins, "count": n,
               "predicted": float(p[m].mean()) if n else None, "observed": float(y[m].mean()) if n else None}
        if n:
            ece += n / len(p) * abs(row["observed"] - row["predicted"])
        table.append(row)
    return (float(ece) if len(p) else float("nan")), table

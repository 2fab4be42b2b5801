"""Hub products, corrected by the catalog's own room photos (CSLS-style scores).

Some catalog photos lie close to almost every room crop: plain, pale, centred products. Searched
from a room, they come first for many objects of many rooms ("hubs") and push the true product
down; in "shop this room" one hub can be the first match of several objects at once. Cross-domain
retrieval corrects this with the density of each target among the queries (Conneau et al., "Word
translation without parallel data", ICLR 2018: CSLS). Here a product's **room density** ``r_p`` is
the mean distance of its photo to its ``k`` nearest crops of reference room photos (the scenes
index: the retailer's own lifestyle photos), and a result is ranked by

    d(q, p) - beta * r_p

so a product near every room (small ``r_p``) loses part of its lead and one that stands apart
keeps it. The reported distance stays d(q, p). ``k`` and ``beta`` were chosen on development
scenes (docs/evaluation.md); the reference photos must never include scenes that are evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from engine.index.catalog_index import Match
from engine.metrics import euclidean_distances

DEFAULT_K = 20  # reference crops averaged per product
DEFAULT_BETA = 0.5  # share of the room density taken off a distance


def room_density(vectors: np.ndarray, reference: np.ndarray, k: int = DEFAULT_K, *, chunk: int = 2048) -> np.ndarray:
    """float32 (N,): each row of ``vectors`` float32 (N, D)'s mean Euclidean distance to its ``k``
    nearest rows of ``reference`` float32 (R, D) (all of them when R < k). Chunked: memory
    ``chunk`` x R."""
    vectors = np.asarray(vectors, np.float32)
    reference = np.asarray(reference, np.float32)
    if vectors.ndim != 2 or reference.ndim != 2 or (len(reference) and vectors.shape[1] != reference.shape[1]):
        raise ValueError(f"vectors (N, D) and reference (R, D) of the same D, got {vectors.shape} and {reference.shape}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if not len(reference):
        raise ValueError("room density needs reference room crops, got none")
    k = min(k, len(reference))
    out = np.empty(len(vectors), np.float32)
    for start in range(0, len(vectors), chunk):
        d = euclidean_distances(vectors[start : start + chunk], reference)
        out[start : start + chunk] = np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1)
    return out


@dataclass(frozen=True)
class HubCorrection:
    """The room density of each product (``density``: product id -> r_p, its photos' lowest) and the
    share ``beta`` taken off a distance; ``rerank`` orders results by d - beta * r_p.

    ``reference``: what the density was measured on (e.g. "scenes index: 2,110 crops of 124
    photos"), for logs and ``/healthz``."""

    beta: float
    k: int
    density: dict[str, float] = field(repr=False)
    reference: str = ""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite share >= 0, got {self.beta}")

    @classmethod
    def fit(cls, vectors: np.ndarray, product_ids: Sequence[str], reference: np.ndarray, *, k: int = DEFAULT_K,
            beta: float = DEFAULT_BETA, reference_name: str = "") -> HubCorrection:
        """The correction of catalog rows ``vectors`` float32 (N, D) (``product_ids`` (N,), several
        rows per product allowed) against reference room crops ``reference`` float32 (R, D)."""
        if len(product_ids) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(product_ids)} product ids")
        per_row = room_density(vectors, reference, k)
        density: dict[str, float] = {}
        for pid, r in zip(product_ids, per_row.tolist()):
            density[pid] = min(r, density.get(pid, np.inf))
        return cls(float(beta), int(k), density, reference_name or f"{len(reference)} room crops")

    def score(self, match: Match) -> float:
        """The corrected distance of one result (d when its product has no density: added since)."""
        return match.distance - self.beta * self.density.get(match.item.product_id, 0.0)

    def rerank(self, matches: Iterable[Match], k: int | None = None) -> list[Match]:
        """``matches`` (one query's, any order) by corrected distance, ties kept in order; the first ``k``."""
        ranked = sorted(matches, key=self.score)
        return ranked if k is None else ranked[:k]

    def with_beta(self, beta: float) -> HubCorrection:
        return replace(self, beta=float(beta))


def fetch_size(k: int, available: int) -> int:
    """How many nearest results to re-rank for the corrected first ``k`` (the correction moves a result
    by at most beta times the spread of the densities: a margin of 40 results, or 2k, covers it)."""
    return min(available, max(2 * k, k + 40))

"""A products index that changes without being rewritten: a sealed base, a small delta, tombstones.

A catalog delta (``engine.index.delta``) on a big index used to load, verify, change and write the
whole folder: at 1M rows that is ~80 % of rebuilding it from the vectors, whatever the delta's size.
A *segmented* index folder (manifest version 2, ``"layout": "segmented"``) instead keeps

    base/           a flat index folder (version 1) that is never written again: each later
                    generation hard-links its files (no bytes copied), its ANN index untouched
    removed.npy     int64 (R,) the base rows deleted since (tombstones), sorted
    delta/          vectors.npy float32 (A, D), items.json, photos.json: the rows added since
                    (an updated product is a tombstone plus an added row)
    manifest.json   the flat manifest's fields, the three parts' counts, and checksums of
                    removed.npy, delta/* and base/manifest.json (which checksums base/'s own files)

so a delta writes only what it changes. ``SegmentedIndex`` searches it: the base's ANN index
(over-fetching past tombstones) merged with exact search over the delta rows. Its rows are the
live base rows in base order, then the delta rows. Once tombstones and delta rows pass a share of
the base, the next delta compacts: one flat index built from the live vectors (``build_index
--compact`` does it on demand).

This module holds the search and the segment files; ``engine.index.catalog_index`` loads a
segmented folder, ``engine.index.delta`` writes one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.index.base import Neighbors, SearchIndex, checked_queries
from engine.index.brute_force import BruteForceIndex

LAYOUT = "segmented"
VERSION = 2  # the manifest version of a segmented folder (a flat one is version 3, or 1: engine.index.catalog_index)
BASE = "base"
DELTA = "delta"
REMOVED = "removed.npy"
DELTA_FILES = ("delta/vectors.npy", "delta/items.json", "delta/photos.json")
COMPACT_ABOVE = 0.1  # tombstones + delta rows, as a share of the base's rows, above which a delta compacts


class SegmentedIndex:
    """Euclidean k-NN over a base ``SearchIndex`` minus ``removed`` rows, plus ``delta`` rows searched exactly.

    base: any ``SearchIndex`` over B rows; removed: int (R,) base rows no longer live; delta_vectors:
    float32 (A, D). Row ``i`` of this index is the i-th live base row for ``i < B - R``, else delta
    row ``i - (B - R)``.
    """

    kind = LAYOUT

    def __init__(self, base: SearchIndex, removed: np.ndarray, delta_vectors: np.ndarray) -> None:
        self.base = base
        self.removed = np.unique(np.asarray(removed, np.int64))
        if len(self.removed) and (self.removed[0] < 0 or self.removed[-1] >= base.size):
            raise ValueError(f"removed rows must be in [0, {base.size}), got {self.removed[0]}..{self.removed[-1]}")
        delta_vectors = np.asarray(delta_vectors, np.float32).reshape(-1, base.dim)
        self.delta_vectors = delta_vectors
        self._delta = BruteForceIndex(delta_vectors) if len(delta_vectors) else None
        self._live_base = base.size - len(self.removed)

    @property
    def size(self) -> int:
        return self._live_base + len(self.delta_vectors)

    @property
    def dim(self) -> int:
        return self.base.dim

    def search(self, queries: np.ndarray, k: int) -> Neighbors:
        """``queries`` float32 (Q, D) → the min(k, N) nearest live rows of each, nearest first."""
        queries, k = checked_queries(queries, self.dim, k, self.size)
        parts = []
        if self._live_base:
            parts.append(self._search_base(queries, k))
        if self._delta is not None:
            nn = self._delta.search(queries, k)
            parts.append((nn.indices + self._live_base, nn.distances))
        if len(parts) == 1:
            return Neighbors(*parts[0])
        idx = np.concatenate([p[0] for p in parts], 1)
        dist = np.concatenate([p[1] for p in parts], 1)
        order = np.lexsort((idx, dist), axis=1)[:, :k]  # by distance, ties by row: deterministic
        return Neighbors(np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1))

    def _search_base(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The min(k, live base rows) nearest live base rows of each query, as rows of this index:
        the base searched for more than k, again for more where tombstones took too many."""
        want = min(k, self._live_base)
        n = self.base.size
        out_i = np.empty((len(queries), want), np.int64)
        out_d = np.empty((len(queries), want), np.float32)
        pending = np.arange(len(queries))
        fetch = min(n, want + min(len(self.removed), max(8, want)))
        while len(pending):
            nn = self.base.search(queries[pending], fetch)
            dead = self._is_removed(nn.indices)
            done = ((~dead).sum(1) >= want) | (fetch >= n)
            if done.any():
                keep = np.argsort(dead[done], axis=1, kind="stable")[:, :want]  # live ones first, in the base's order
                rows = np.take_along_axis(nn.indices[done], keep, 1)
                out_i[pending[done]] = rows - np.searchsorted(self.removed, rows)
                out_d[pending[done]] = np.take_along_axis(nn.distances[done], keep, 1)
            pending = pending[~done]
            fetch = min(n, fetch * 4)
        return out_i, out_d

    def _is_removed(self, rows: np.ndarray) -> np.ndarray:
        """bool, shaped as ``rows``: which base rows are tombstones (binary search: O(k log R) a query,
        where ``np.isin`` would sort all R tombstones each time)."""
        if not len(self.removed):
            return np.zeros(rows.shape, bool)
        pos = np.minimum(np.searchsorted(self.removed, rows), len(self.removed) - 1)
        return self.removed[pos] == rows

    def save(self, folder: Path) -> None:
        raise TypeError("a segmented index is written by engine.index.delta.write_segmented, not saved as one backend")

    def describe(self) -> dict:
        return {"base_kind": self.base.kind, "base_params": self.base.describe(), "removed": len(self.removed),
                "delta": len(self.delta_vectors)}

    def share_changed(self) -> float:
        """Tombstones plus delta rows as a share of the base's rows (what compaction is decided by)."""
        return (len(self.removed) + len(self.delta_vectors)) / max(1, self.base.size)


def share_changed_of(manifest: dict) -> float:
    """``SegmentedIndex.share_changed`` read from a products index folder's manifest, without loading
    it: tombstones plus delta rows over the base's rows (0 for a flat folder)."""
    if manifest.get("layout") != LAYOUT:
        return 0.0
    params = manifest["index_params"]
    return (int(params["removed"]) + int(params["delta"])) / max(1, int(manifest["base"]["count"]))


def live_base_rows(base_size: int, removed: np.ndarray) -> np.ndarray:
    """int64: the base rows not in ``removed``, in order."""
    keep = np.ones(base_size, bool)
    keep[np.asarray(removed, np.int64)] = False
    return np.flatnonzero(keep)


class LiveRows:
    """The vectors of a segmented index, float32 (N, D), read through to its parts instead of copied.

    Row ``i`` is ``base[live[i]]`` for ``i < len(live)``, else ``delta[i - len(live)]`` (the rows of
    ``SegmentedIndex``). A loaded segmented index used to hold them as one new array beside its
    base's vectors: at 1M x 256 a second GB in every serving worker until the next compaction, and
    another at its peak while loading. Indexing (an int, a slice, an int array) returns an ndarray of
    just those rows; ``np.asarray`` assembles all of them (compaction and saving, which write them
    anyway). Read-only: the parts are a published generation's.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, base: np.ndarray, live: np.ndarray, delta: np.ndarray) -> None:
        self.base = np.asarray(base, np.float32)
        self.live = np.asarray(live, np.int64)
        self.delta = np.asarray(delta, np.float32).reshape(-1, self.base.shape[1])
        self.shape = (len(self.live) + len(self.delta), self.base.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            raise TypeError("LiveRows takes rows (an int, a slice or an int array), not a tuple; np.asarray() it first")
        if isinstance(key, slice):
            return self._rows(np.arange(*key.indices(len(self))))
        rows = np.asarray(key)
        if rows.dtype == bool:
            raise TypeError("LiveRows takes row numbers, not a mask; np.flatnonzero() the mask first")
        if rows.size and rows.dtype.kind not in "iu":
            raise TypeError(f"LiveRows takes integer row numbers, got {rows.dtype}")
        return self._rows(rows.reshape(-1)).reshape(*rows.shape, self.shape[1])  # an int: one row (D,)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """float32 (len(rows), D): the given rows (negative ones counted from the end)."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        n, nb = len(self), len(self.live)
        if len(rows) and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row out of range for {n} rows")
        rows = np.where(rows < 0, rows + n, rows)
        out = np.empty((len(rows), self.shape[1]), np.float32)
        in_base = rows < nb
        out[in_base] = self.base[self.live[rows[in_base]]]
        out[~in_base] = self.delta[rows[~in_base] - nb]
        return out

    def __iter__(self):
        for s in range(0, len(self), 65_536):
            yield from self[s : s + 65_536]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if copy is False:
            raise ValueError("LiveRows cannot be viewed as one array without a copy")
        out = np.concatenate([self.base[self.live], self.delta])
        return out if dtype is None else out.astype(dtype, copy=False)


def read_delta(folder: Path, dim: int) -> tuple[np.ndarray, np.ndarray, list[dict], list[str]]:
    """(removed int64 (R,), delta vectors float32 (A, D), delta item records, delta photo hashes) of a
    segmented folder (checksums already verified by the caller)."""
    folder = Path(folder)
    removed = np.load(folder / REMOVED).astype(np.int64)
    vectors = np.load(folder / DELTA / "vectors.npy").astype(np.float32).reshape(-1, dim)
    items = json.loads((folder / DELTA / "items.json").read_text())
    hashes = json.loads((folder / DELTA / "photos.json").read_text())
    if not (len(vectors) == len(items) == len(hashes)):
        raise ValueError(f"{folder}/{DELTA}: {len(vectors)} vectors, {len(items)} items, {len(hashes)} photo hashes")
    return removed, vectors, items, hashes


def write_delta(folder: Path, removed: np.ndarray, vectors: np.ndarray, items: list[dict], hashes: list[str]) -> None:
    """The tombstones and the delta segment into ``folder`` (a segmented folder being written)."""
    folder = Path(folder)
    (folder / DELTA).mkdir(parents=True, exist_ok=True)
    np.save(folder / REMOVED, np.unique(np.asarray(removed, np.int64)))
    np.save(folder / DELTA / "vectors.npy", np.asarray(vectors, np.float32))
    (folder / DELTA / "items.json").write_text(json.dumps(items))
    (folder / DELTA / "photos.json").write_text(json.dumps(hashes))

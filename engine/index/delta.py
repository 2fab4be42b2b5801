"""A catalog that changes: products added, updated or removed from a products index without rebuilding it.

``apply_delta`` makes the next products index from the current one:

- the rows of removed and updated products go;
- the rows of added and updated products come, each photo embedded only when no row of the current
  index already holds a photo with the same bytes (vectors are keyed by the photo's sha256, and an
  index belongs to one model, so a reused vector is this model's vector of that photo);
- the ANN index is changed in place when its backend can (ScaNN's own delete / upsert, which keeps
  the trained tree and codebooks), else rebuilt from the stored vectors (exact search); then its
  recall@k against exact search is measured on the index's tuning queries, and an index that fell
  below the target is rebuilt from the vectors with the same settings.

The result is a new ``CatalogIndex`` (saved into a new generation by ``serving.build_index``, so the
served one is never written); its ``tuning`` record keeps how it was tuned and adds ``updates``:
what each delta did and measured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.data.catalog import ProductImage
from engine.files import file_sha256
from engine.index.brute_force import BruteForceIndex
from engine.index.catalog_index import CatalogIndex, Item
from engine.index.tuning import recall_at_k

logger = logging.getLogger(__name__)

# photo files -> float32 (N, D), their embeddings by the index's model, in order
EmbedPaths = Callable[[Sequence[Path]], np.ndarray]


class DeltaError(ValueError):
    """A delta that does not fit the index: unknown or duplicate ids, nothing to do, another model."""


@dataclass(frozen=True)
class CatalogDelta:
    """What changes: ``add`` rows of new products, ``update`` rows replacing every row of existing
    products (a new photo, name, type or fields), ``remove`` product ids (products.csv's format and
    meaning: one row per product photo)."""

    add: tuple[ProductImage, ...] = ()
    update: tuple[ProductImage, ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.update or self.remove)


@dataclass
class DeltaReport:
    """What a delta did: products and rows added, updated, removed; photos embedded vs reused; how
    the ANN index was changed, its recall@k against exact search after, and the seconds it took."""

    products_added: int = 0
    products_updated: int = 0
    products_removed: int = 0
    rows_before: int = 0
    rows_after: int = 0
    embedded: int = 0
    reused: int = 0
    method: str = ""
    recall: float | None = None
    recall_queries: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: ({s: round(t, 4) for s, t in v.items()} if k == "seconds" else round(v, 4) if isinstance(v, float) else v)
                for k, v in self.__dict__.items()}


def photo_hashes(index: CatalogIndex, root: str | Path | None = None) -> list[str]:
    """sha256 of each row's photo: stored with the index (``CatalogIndex.photo_hashes``), else read
    from the photo files under ``root`` (the index's catalog root by default)."""
    if index.photo_hashes is not None:
        return list(index.photo_hashes)
    return [file_sha256(index.image_path(it, root)) for it in index.items]


def check_delta(index: CatalogIndex, delta: CatalogDelta) -> None:
    """Raise ``DeltaError`` when ``delta`` does not fit ``index``: nothing to do, an added product that
    exists, an updated or removed one that does not, a product in two lists, another image than a
    product's own type."""
    if not delta:
        raise DeltaError("the delta is empty: give products to add, update or remove")
    known = {it.product_id for it in index.items}
    added = {p.product_id for p in delta.add}
    updated = {p.product_id for p in delta.update}
    removed = set(delta.remove)
    if added & known:
        raise DeltaError(f"{len(added & known)} product(s) to add are already in the index, e.g. {sorted(added & known)[:5]}: "
                         "use --update to change them")
    for what, bad in (("update", updated - known), ("remove", removed - known)):
        if bad:
            raise DeltaError(f"{len(bad)} product(s) to {what} are not in the index, e.g. {sorted(bad)[:5]}: "
                             "check the ids (--add adds a new product)")
    both = (added & updated) | (added & removed) | (updated & removed)
    if both:
        raise DeltaError(f"{len(both)} product(s) appear in two of --add, --update, --remove, e.g. {sorted(both)[:5]}; give each once")
    if not known - removed - updated and not delta.add and not delta.update:
        raise DeltaError("the delta removes every product: build a new index instead")


def apply_delta(index: CatalogIndex, delta: CatalogDelta, embed_paths: EmbedPaths, *, root: str | Path | None = None,
                queries: np.ndarray | None = None, target_recall: float = 0.95, k: int = 10, n_queries: int = 200,
                seed: int = 0) -> tuple[CatalogIndex, DeltaReport]:
    """The next products index: ``index`` with ``delta`` applied (see the module docstring).

    ``embed_paths`` embeds photo files with the index's model (called once, with only the photos no
    row holds yet); ``root``: where the index's own photos are, read only to hash them when the index
    predates ``photos.json`` (default: its catalog root; the delta's rows carry resolved paths); ``queries`` float32 (Q, D): the queries recall@``k`` is
    measured on after the change (a seeded sample of at most ``n_queries`` of them; None: of the new
    vectors; 200 queries x 10 neighbours measure a recall near 0.95 within about ±0.01, and exact
    search over 1M vectors for them costs seconds, not the half minute of 1,000);
    an ANN index below ``target_recall`` after the change is rebuilt from the vectors.
    """
    check_delta(index, delta)
    t0 = time.perf_counter()
    report = DeltaReport(len({p.product_id for p in delta.add}), len({p.product_id for p in delta.update}), len(set(delta.remove)),
                         rows_before=len(index))
    root = Path(root or index.catalog_root)
    hashes = photo_hashes(index, root)
    changed = set(delta.remove) | {p.product_id for p in delta.update}
    remove_rows = np.array([i for i, it in enumerate(index.items) if it.product_id in changed], np.int64)
    new_rows = list(delta.add) + list(delta.update)
    new_hashes = [p.sha256 or file_sha256(p.image) for p in new_rows]
    have = {h: i for i, h in enumerate(hashes)}
    need = sorted({h: p.image for p, h in zip(new_rows, new_hashes) if h not in have}.items())
    report.seconds["hash"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    fresh: dict[str, np.ndarray] = {}
    if need:
        vecs = np.asarray(embed_paths([path for _, path in need]), np.float32)
        if vecs.shape != (len(need), index.vectors.shape[1]):
            raise DeltaError(f"the model gave vectors of shape {vecs.shape} for {len(need)} photos; the index holds "
                             f"{index.vectors.shape[1]}-dim vectors: was it built with another model?")
        fresh = {h: v for (h, _), v in zip(need, vecs)}
    report.embedded, report.reused = len(need), len(new_rows) - sum(h not in have for h in new_hashes)
    report.seconds["embed"] = time.perf_counter() - t1
    add_vectors = np.stack([fresh[h] if h in fresh else index.vectors[have[h]] for h in new_hashes]) if new_rows else \
        np.zeros((0, index.vectors.shape[1]), np.float32)
    add_items = _new_items(index, new_rows)

    t2 = time.perf_counter()
    search_index, order, report.method = _change_ann(index, remove_rows, add_vectors)
    vectors = np.concatenate([index.vectors, add_vectors])[order]
    every_item, every_hash = index.items + add_items, hashes + new_hashes
    items = [every_item[i] for i in order.tolist()]
    all_hashes = [every_hash[i] for i in order.tolist()]
    report.seconds["ann"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    if not isinstance(search_index, BruteForceIndex):
        report.recall, report.recall_queries = ann_recall(search_index, vectors, queries, k, n_queries, seed)
        if report.recall < target_recall:
            logger.warning("recall@%d fell to %.3f after the change (target %.2f): rebuilding the ANN index from the vectors",
                           k, report.recall, target_recall)
            search_index = type(search_index)(vectors, search_index.params)
            report.method += f"; recall {report.recall:.3f} < {target_recall}: rebuilt from the vectors with the same settings"
            report.recall, report.recall_queries = ann_recall(search_index, vectors, queries, k, n_queries, seed)
    report.seconds["recall"] = time.perf_counter() - t3
    report.rows_after = len(items)
    report.seconds["total"] = time.perf_counter() - t0
    tuning = dict(index.tuning or {})
    tuning["updates"] = [*tuning.get("updates", []), report.as_dict()]
    updated = CatalogIndex(vectors, items, search_index, index.model_fingerprint, preprocessing=index.preprocessing,
                           catalog_root=index.catalog_root, tuning=tuning)
    updated.embedded_by = index.embedded_by
    updated.photo_hashes = all_hashes
    logger.info("delta: +%d ~%d -%d products, %d photos embedded and %d reused, %s; %d -> %d rows in %.2fs",
                report.products_added, report.products_updated, report.products_removed, report.embedded, report.reused,
                report.method, report.rows_before, report.rows_after, report.seconds["total"])
    return updated, report


def _new_items(index: CatalogIndex, rows: Sequence[ProductImage]) -> list[Item]:
    """Items of the delta's rows, their ids ``<product>#<n>`` numbered after every id the index has used;
    photo paths relative to the index's catalog root (absolute outside it), as a full build stores them."""
    root = Path(index.catalog_root).resolve() if index.catalog_root else None
    used = [int(it.item_id.rsplit("#", 1)[1]) for it in index.items if it.item_id.rsplit("#", 1)[-1].isdigit()]
    start = max(used, default=-1) + 1
    out = []
    for j, p in enumerate(rows):
        image = p.image.relative_to(root).as_posix() if root is not None and p.image.is_relative_to(root) else str(p.image)
        out.append(Item(f"{p.product_id}#{start + j}", p.product_id, p.name, p.type, image, details=p.details))
    return out


def _change_ann(index: CatalogIndex, remove: np.ndarray, add: np.ndarray):
    """(search index, order, method): the ANN index with ``remove`` rows deleted and ``add`` appended,
    in place when the backend mutates (``mutate``), else rebuilt as exact search from the vectors."""
    ann = index.index
    n = len(index)
    if hasattr(ann, "mutate") and n - len(remove) + len(add) >= 2:
        order = ann.mutate(remove, add)
        return ann, order, f"{ann.kind}: {len(remove)} rows deleted and {len(add)} upserted in place"
    if not isinstance(ann, BruteForceIndex):
        raise DeltaError(f"a {ann.kind} index cannot be changed in place; build a full index with python -m serving.build_index")
    keep = np.setdiff1d(np.arange(n), remove)
    order = np.concatenate([keep, np.arange(n, n + len(add))]).astype(np.int64)
    return BruteForceIndex(np.concatenate([index.vectors, add])[order]), order, "exact search over the new vectors"


def ann_recall(ann, vectors: np.ndarray, queries: np.ndarray | None, k: int, n_queries: int, seed: int) -> tuple[float, int]:
    """recall@k of ``ann`` against exact search over ``vectors`` on ``queries`` (or a seeded sample of the vectors)."""
    if queries is None or not len(queries):
        rng = np.random.default_rng(seed)
        queries = vectors[rng.choice(len(vectors), min(n_queries, len(vectors)), replace=False)]
    elif len(queries) > n_queries:
        queries = queries[np.random.default_rng(seed).choice(len(queries), n_queries, replace=False)]
    exact = BruteForceIndex(vectors).search(queries, k).indices
    approx = ann.search(queries, k).indices
    return float(recall_at_k(approx, exact, queries=queries, vectors=vectors)), len(queries)

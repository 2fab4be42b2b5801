"""A catalog that changes: products added, updated or removed from a products index without rebuilding it.

``apply_delta`` makes the next products index from the current one:

- the rows of removed and updated products go;
- the rows of added and updated products come, each photo embedded only when no row of the current
  index already holds a photo with the same bytes (vectors are keyed by the photo's sha256, and an
  index belongs to one model, so a reused vector is this model's vector of that photo; in an index
  that blends its products' views, by the photo's sha256 and the product, since another product's
  row holds another blend);
- when the delta brings in-room views of its products (``CatalogDelta.views``, e.g. made by
  ``training.synthesize --only``), their rows' photos are embedded afresh (a stored vector may
  already be blended) and blended with them as a full build blends (``engine.index.views``), at the
  index's own weight; in such an index, products whose photos are embedded without views (none
  given for them) are counted (``DeltaReport.without_views``) and logged: their rows are their
  photos alone until views of them come with a later delta;
- the ANN index is changed in place when its backend can (ScaNN's own delete / upsert, which keeps
  the trained tree and codebooks), else rebuilt from the stored vectors (exact search); then its
  recall@k against exact search is measured on the index's tuning queries, and an index that fell
  below the target is rebuilt from the vectors with the same settings.

The result is a new ``CatalogIndex`` (saved into a new generation by ``serving.build_index``, so the
served one is never written); its ``tuning`` record keeps how it was tuned and adds ``updates``:
what each delta did and measured.

``write_delta_folder`` is what ``build_index`` runs: from one index folder to the next without loading
or rewriting the unchanged rows. It writes a *segmented* folder (``engine.index.segments``): the
base's files hard-linked, its tombstones and the delta rows beside them, the base's ANN index
untouched. Only when the changes pass ``COMPACT_ABOVE`` of the base (or on ``compact=True``, or for a
base that cannot be a segment) does it load the whole index, apply ``apply_delta`` and write a flat
folder again: the compaction.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.data.catalog import ProductImage
from engine.files import atomic_folder, file_sha256, link_or_copy
from engine.index import segments
from engine.index.base import SearchIndex
from engine.index.brute_force import BruteForceIndex
from engine.index.catalog_index import (FORMAT, CatalogIndex, IndexFolderError, Item, check_model, moved_files, read_manifest,
                                         verify_checksums)
from engine.index.milvus import MilvusIndex, split_collection, unique_collection
from engine.index.scann_backend import ScannIndex
from engine.index.tuning import recall_at_k
from engine.index.views import ProductView, ProductViews, fuse_views

logger = logging.getLogger(__name__)

# photo files -> float32 (N, D), their embeddings by the index's model, in order
EmbedPaths = Callable[[Sequence[Path]], np.ndarray]
# in-room views -> float32 (V, D), each embedded as a room crop by the index's model, in order
EmbedViews = Callable[[Sequence[ProductView]], np.ndarray]


class DeltaError(ValueError):
    """A delta that does not fit the index: unknown or duplicate ids, nothing to do, another model."""


@dataclass(frozen=True)
class CatalogDelta:
    """What changes: ``add`` rows of new products, ``update`` rows replacing every row of existing
    products (a new photo, name, type or fields), ``remove`` product ids (products.csv's format and
    meaning: one row per product photo); ``views``: in-room views of added or updated products,
    blended into their photos' vectors (products without one keep their photos alone)."""

    add: tuple[ProductImage, ...] = ()
    update: tuple[ProductImage, ...] = ()
    remove: tuple[str, ...] = ()
    views: ProductViews | None = None

    def __bool__(self) -> bool:
        return bool(self.add or self.update or self.remove)

    @cached_property
    def viewed(self) -> frozenset[str]:
        """The products ``views`` holds views of (computed once)."""
        return frozenset(v.product_id for v in self.views.views) if self.views is not None else frozenset()


@dataclass
class DeltaReport:
    """What a delta did: products and rows added, updated, removed; photos embedded vs reused; the
    in-room views blended (``ProductViews.record``); how the ANN index was changed, its recall@k
    against exact search after, and the seconds it took."""

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
    views: dict | None = None
    without_views: int = 0  # in an index that blends views: products whose photos were embedded with none
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


def check_delta(index: CatalogIndex | set[str], delta: CatalogDelta) -> None:
    """Raise ``DeltaError`` when ``delta`` does not fit ``index`` (or the set of its product ids): nothing
    to do, an added product that exists, an updated or removed one that does not, a product in two
    lists, every product removed, views of a product the delta neither adds nor updates."""
    if not delta:
        raise DeltaError("the delta is empty: give products to add, update or remove")
    known = index if isinstance(index, set) else set(index.items.column("product_id"))
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
    if delta.views is not None:
        stray = delta.viewed - added - updated
        if stray:
            raise DeltaError(f"in-room views of {len(stray)} product(s) this delta neither adds nor updates, e.g. {sorted(stray)[:5]}: "
                             "give only the views of its products (ProductViews.for_products)")


def check_views_weight(embedded_by: dict, delta: CatalogDelta) -> None:
    """Raise ``DeltaError`` when ``delta``'s views would be blended at another weight than the index
    (its manifest's ``embedded_by``) blended its own: one index, one blend."""
    built = (embedded_by or {}).get("views")
    if delta.views is not None and built and not math.isclose(float(built["weight"]), delta.views.weight):
        raise DeltaError(f"the index blends its products' views at weight {built['weight']}, this delta's at {delta.views.weight}: "
                         f"give --views-weight {built['weight']} (or build a full index at the new weight)")


def _vector_key(blended: bool) -> Callable[[str, str], object]:
    """What a stored vector is reused by: the photo's sha256; in an index that blends its products'
    views, the photo's sha256 and the product's id (another product's row holds another blend)."""
    return (lambda sha, product: (sha, product)) if blended else (lambda sha, product: sha)


def _plan_rows(rows: Sequence[ProductImage], hashes: Sequence[str], stored: Callable[[str, str], object | None],
               delta: CatalogDelta) -> tuple[list[object | None], list[tuple[str, Path]]]:
    """For each of ``rows`` where its stored vector is (``stored(sha256, product)``; None: its photo is
    embedded), and the (sha256, path) of the photos to embed, once each, sorted. A product with views
    in ``delta`` is always embedded (a stored vector may be a blend with other views)."""
    where = [None if p.product_id in delta.viewed else stored(h, p.product_id) for p, h in zip(rows, hashes)]
    return where, sorted({h: p.image for p, h, w in zip(rows, hashes, where) if w is None}.items())


def _count_unviewed(embedded_by: dict | None, rows: Sequence[ProductImage], where: Sequence[object | None],
                    delta: CatalogDelta, report: DeltaReport) -> None:
    """In an index that blends its products' views, ``report.without_views``: the products of ``rows``
    whose photos this delta embeds (``where`` None) with no view of theirs in ``delta`` (logged)."""
    if not (embedded_by or {}).get("views"):
        return
    bare = sorted({p.product_id for p, w in zip(rows, where) if w is None and p.product_id not in delta.viewed})
    report.without_views = len(bare)
    if bare:
        logger.warning("the index blends its products' in-room views, but %d product(s) of this delta have none (e.g. %s): "
                       "their rows are their photos alone; give their views (training.synthesize --only) to blend them",
                       len(bare), ", ".join(bare[:5]))


def _blend_views(vectors: np.ndarray, rows: Sequence[ProductImage], delta: CatalogDelta, embed_views: EmbedViews | None,
                 report: DeltaReport) -> np.ndarray:
    """float32 (R, D) vectors of ``rows`` blended with ``delta``'s views of their products (unchanged without views)."""
    if delta.views is None:
        return vectors
    if embed_views is None:
        raise DeltaError("the delta has in-room views but no function to embed them (embed_views)")
    t = time.perf_counter()
    views = delta.views.views
    vv = np.asarray(embed_views(views), np.float32)
    if vv.shape != (len(views), vectors.shape[1]):
        raise DeltaError(f"the model gave vectors of shape {vv.shape} for {len(views)} views; the index holds "
                         f"{vectors.shape[1]}-dim vectors: was it built with another model?")
    report.views = delta.views.record()
    report.seconds["views"] = time.perf_counter() - t
    logger.info("%d in-room views of %d products blended into their photos' vectors (weight %g)", len(views),
                report.views["products"], delta.views.weight)
    return fuse_views(vectors, [p.product_id for p in rows], vv, [v.product_id for v in views], delta.views.weight)


def apply_delta(index: CatalogIndex, delta: CatalogDelta, embed_paths: EmbedPaths, *, root: str | Path | None = None,
                queries: np.ndarray | None = None, target_recall: float = 0.95, k: int = 10, n_queries: int = 200,
                seed: int = 0, embed_views: EmbedViews | None = None) -> tuple[CatalogIndex, DeltaReport]:
    """The next products index: ``index`` with ``delta`` applied (see the module docstring).

    ``embed_paths`` embeds photo files with the index's model (called once, with only the photos no
    row holds yet); ``root``: where the index's own photos are, read only to hash them when the index
    predates ``photos.json`` (default: its catalog root; the delta's rows carry resolved paths); ``queries`` float32 (Q, D): the queries recall@``k`` is
    measured on after the change (a seeded sample of at most ``n_queries`` of them; None: of the new
    vectors; 200 queries x 10 neighbours measure a recall near 0.95 within about ±0.01, and exact
    search over 1M vectors for them costs seconds, not the half minute of 1,000);
    an ANN index below ``target_recall`` after the change is rebuilt from the vectors;
    ``embed_views`` embeds ``delta.views`` (required with them).
    """
    check_delta(index, delta)
    check_views_weight(index.embedded_by, delta)
    t0 = time.perf_counter()
    if isinstance(index.index, segments.SegmentedIndex):
        if isinstance(index.index.base, MilvusIndex):
            raise DeltaError("a Milvus-backed index is never changed in place: write_delta_folder writes a segment or a new collection")
        index = compacted(index)
    report = DeltaReport(len({p.product_id for p in delta.add}), len({p.product_id for p in delta.update}), len(set(delta.remove)),
                         rows_before=len(index))
    root = Path(root or index.catalog_root)
    hashes = photo_hashes(index, root)
    changed = set(delta.remove) | {p.product_id for p in delta.update}
    remove_rows = np.array([i for i, p in enumerate(index.items.column("product_id")) if p in changed], np.int64)
    new_rows = list(delta.add) + list(delta.update)
    new_hashes = [p.sha256 or file_sha256(p.image) for p in new_rows]
    key = _vector_key(bool((index.embedded_by or {}).get("views")))
    have = {key(h, p): i for i, (h, p) in enumerate(zip(hashes, index.items.column("product_id")))}
    where, need = _plan_rows(new_rows, new_hashes, lambda h, p: have.get(key(h, p)), delta)
    _count_unviewed(index.embedded_by, new_rows, where, delta, report)
    report.seconds["hash"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    fresh: dict[str, np.ndarray] = {}
    if need:
        vecs = np.asarray(embed_paths([path for _, path in need]), np.float32)
        if vecs.shape != (len(need), index.vectors.shape[1]):
            raise DeltaError(f"the model gave vectors of shape {vecs.shape} for {len(need)} photos; the index holds "
                             f"{index.vectors.shape[1]}-dim vectors: was it built with another model?")
        fresh = {h: v for (h, _), v in zip(need, vecs)}
    report.embedded, report.reused = len(need), sum(w is not None for w in where)
    report.seconds["embed"] = time.perf_counter() - t1
    add_vectors = np.stack([fresh[h] if w is None else index.vectors[w] for h, w in zip(new_hashes, where)]) if new_rows else \
        np.zeros((0, index.vectors.shape[1]), np.float32)
    add_vectors = _blend_views(add_vectors, new_rows, delta, embed_views, report)
    add_items = _new_items(index, new_rows)

    t2 = time.perf_counter()
    search_index, order, report.method = _change_ann(index, remove_rows, add_vectors)
    vectors = np.concatenate([index.vectors, add_vectors])[order]
    every_item, every_hash = index.items + add_items, hashes + new_hashes
    items = every_item.take(order)
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
    return _items_for(rows, index.catalog_root, _next_item_number(index.items.column("item_id")))


def _next_item_number(item_ids) -> int:
    """One more than the largest ``n`` of the ``<product>#<n>`` ids given (0 for none)."""
    used = [int(tail) for tail in (i.rsplit("#", 1)[-1] for i in item_ids) if tail.isdigit()]
    return max(used, default=-1) + 1


def _items_for(rows: Sequence[ProductImage], catalog_root: str, start: int) -> list[Item]:
    root = Path(catalog_root).resolve() if catalog_root else None
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


def compacted(index: CatalogIndex) -> CatalogIndex:
    """A segmented ``index`` made flat: one ANN index over its live vectors, of its base's kind and
    settings (ScaNN trained again; exact search stays exact). Its rows, items and hashes are unchanged."""
    seg = index.index
    if not isinstance(seg, segments.SegmentedIndex):
        return index
    t = time.perf_counter()
    flat = rebuilt_like(index, seg.base)
    logger.info("compacted %d base rows, %d tombstones and %d delta rows into one %s index of %d rows in %.1fs", seg.base.size,
                len(seg.removed), len(seg.delta_vectors), flat.index.kind, len(flat), time.perf_counter() - t)
    return flat


def rebuilt_like(index: CatalogIndex, like: SearchIndex | None) -> CatalogIndex:
    """``index`` (its rows, items and hashes unchanged) searched by a new index of ``like``'s kind and
    settings built from its vectors: ScaNN trained again, a new Milvus collection (named as a build
    names one; the collections of earlier generations are never written), else exact search (also
    for ``like`` None)."""
    vectors = np.asarray(index.vectors, np.float32)  # a segmented index's live rows, assembled once (its own array)
    if isinstance(like, MilvusIndex):
        prefix, suffix = split_collection(like.settings.collection)
        settings = replace(like.settings, collection=f"{unique_collection(prefix)}{suffix}")
        meta = [{"item_id": i, "product_id": p, "type": t} for i, p, t in
                zip(*(index.items.column(f) for f in ("item_id", "product_id", "type")))]
        ann = MilvusIndex.create(vectors, settings, index.model_fingerprint, meta)
    elif isinstance(like, ScannIndex) and len(vectors) >= 2:
        ann = ScannIndex(vectors, like.params)
    else:
        ann = BruteForceIndex(vectors)
    out = CatalogIndex(vectors, index.items, ann, index.model_fingerprint, preprocessing=index.preprocessing,
                       catalog_root=index.catalog_root, tuning=index.tuning)
    out.embedded_by, out.photo_hashes = index.embedded_by, index.photo_hashes
    return out


def write_delta_folder(source: Path, out: Path, delta: CatalogDelta, embed_paths: EmbedPaths, *, model_fingerprint: str | None = None,
                       queries: np.ndarray | Callable[[], np.ndarray] | None = None, target_recall: float = 0.95, k: int = 10,
                       n_queries: int = 200, seed: int = 0, compact: bool = False,
                       compact_above: float = segments.COMPACT_ABOVE, embed_views: EmbedViews | None = None) -> DeltaReport:
    """Write into ``out`` the products index folder ``source`` changed by ``delta`` (see the module docstring).

    Segmented when it can be: ``source``'s base hard-linked, never loaded; its photo hashes read only
    when rows are added, and its vectors only when an added photo is already indexed (each file's
    checksum verified before it is read); its other files checked by size (a missing or truncated one
    is refused here, any other damage by the next full load, the service's, which hashes every file).
    Flat (``apply_delta``, then ``save``) when ``compact``, when the tombstones and delta rows would
    pass ``compact_above`` of the base's rows, or when the base cannot be a segment (no photo hashes).
    A Milvus base is never changed: a segment searches its collection as it is, and compaction fills
    a new collection. ``queries`` (or a function loading them, called only when it compacts) …
    ``seed`` and ``embed_views`` are then ``apply_delta``'s.
    """
    source, out = Path(source), Path(out)
    t0 = time.perf_counter()
    manifest = read_manifest(source)
    check_model(source, manifest, model_fingerprint)
    state = None if compact else _segments_of(source, manifest)
    if state is not None:
        report = _segmented_delta(state, delta, embed_paths, out, compact_above, t0, embed_views)
        if report is not None:
            return report
    index = CatalogIndex.load(source, model_fingerprint=model_fingerprint)
    queries = queries() if callable(queries) else queries
    like = index.index.base if isinstance(index.index, segments.SegmentedIndex) else index.index
    if isinstance(like, MilvusIndex):  # a collection is never changed in place (an earlier generation searches it): exact, then a new one
        index = rebuilt_like(index, None)
    updated, report = apply_delta(index, delta, embed_paths, queries=queries, target_recall=target_recall,
                                  k=k, n_queries=n_queries, seed=seed, embed_views=embed_views)
    if isinstance(like, MilvusIndex):
        updated = rebuilt_like(updated, like)
        report.method += f"; a new Milvus collection {updated.index.settings.collection} of the {len(updated)} rows"
        report.recall, report.recall_queries = ann_recall(updated.index, updated.vectors, queries, k, n_queries, seed)
    t = time.perf_counter()
    updated.save(out)
    report.seconds["save"] = time.perf_counter() - t
    report.seconds["total"] = time.perf_counter() - t0
    return report


@dataclass
class _Segments:
    """An index folder opened for a segmented delta: where its flat base is, the manifests, and its segments."""

    folder: Path
    manifest: dict
    base: Path
    base_manifest: dict
    removed: np.ndarray
    delta_vectors: np.ndarray
    delta_items: list[dict]
    delta_hashes: list[str]


def _segments_of(source: Path, manifest: dict) -> _Segments | None:
    """``source`` opened for a segmented delta, or None (logged) when its base cannot be a segment."""
    if manifest.get("layout") == segments.LAYOUT:
        verify_checksums(source, manifest)  # the tombstones, the delta rows and the base's manifest
        base = source / segments.BASE
        base_manifest = read_manifest(base)
        try:
            removed, vectors, items, hashes = segments.read_delta(source, int(manifest["dim"]))
        except (ValueError, KeyError, OSError) as exc:
            raise IndexFolderError(f"{source}: its delta segment is damaged ({exc}); "
                                   "rebuild it with python -m serving.build_index") from None
    else:
        base, base_manifest = source, manifest
        removed, vectors, items, hashes = np.zeros(0, np.int64), np.zeros((0, int(manifest["dim"])), np.float32), [], []
    why = ""
    if base_manifest["index_kind"] not in ("scann", "brute_force", "milvus"):
        why = f"a segment is not searched over a {base_manifest['index_kind']} index"
    elif "photos.json" not in base_manifest["checksums"]:
        why = "it predates photos.json, so its photos' hashes are not stored"
    elif not all(i.rsplit("#", 1)[-1].isdigit() for i in base_manifest["item_ids"][:1000]):
        why = "its item ids are not <product>#<n>"
    if why:
        logger.info("%s cannot be the base of a segmented index (%s): the delta rewrites the index", source, why)
        return None
    if base_manifest.get("sizes") is None:  # written before sizes were stored: its bytes are hashed once, by this delta
        logger.info("%s records no file sizes: verifying its checksums", base)
        verify_checksums(base, base_manifest)
    else:
        bad = moved_files(base, base_manifest)
        if bad:
            raise IndexFolderError(f"{base}: {', '.join(bad[:3])} missing or damaged (size mismatch); "
                                   "rebuild it with python -m serving.build_index")
    return _Segments(source, manifest, base, base_manifest, removed, vectors, items, hashes)


def _segmented_delta(state: _Segments, delta: CatalogDelta, embed_paths: EmbedPaths, out: Path, compact_above: float,
                     t0: float, embed_views: EmbedViews | None = None) -> DeltaReport | None:
    """The delta written as a segmented folder, or None (logged) when it should compact instead."""
    base_ids: list[str] = state.base_manifest["item_ids"]
    n_base = len(base_ids)
    base_products = [i.rsplit("#", 1)[0] for i in base_ids]
    dead = np.zeros(n_base, bool)
    dead[state.removed] = True
    known = {p for p, d in zip(base_products, dead.tolist()) if not d} | {r["product_id"] for r in state.delta_items}
    check_delta(known, delta)
    check_views_weight(state.base_manifest.get("embedded_by"), delta)
    report = DeltaReport(len({p.product_id for p in delta.add}), len({p.product_id for p in delta.update}), len(set(delta.remove)),
                         rows_before=int(n_base - dead.sum() + len(state.delta_items)))
    changed = set(delta.remove) | {p.product_id for p in delta.update}
    tombstones = np.array([i for i, p in enumerate(base_products) if p in changed and not dead[i]], np.int64)
    keep = [j for j, r in enumerate(state.delta_items) if r["product_id"] not in changed]
    new_rows = list(delta.add) + list(delta.update)
    new_hashes = [p.sha256 or file_sha256(p.image) for p in new_rows]
    removed = np.union1d(state.removed, tombstones).astype(np.int64)
    n_delta = len(keep) + len(new_rows)
    share = (len(removed) + n_delta) / max(1, n_base)
    if share > compact_above:
        logger.info("tombstones and delta rows would be %.1f%% of the base's %d rows (above %.0f%%): compacting", 100 * share, n_base,
                    100 * compact_above)
        return None
    report.seconds["read"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    key = _vector_key(bool((state.base_manifest.get("embedded_by") or {}).get("views")))
    have_delta = {key(state.delta_hashes[j], state.delta_items[j]["product_id"]): j for j in keep}
    have_base: dict = {}

    def stored(sha: str, product: str) -> tuple[str, int] | None:
        k = key(sha, product)
        return ("delta", have_delta[k]) if k in have_delta else ("base", have_base[k]) if k in have_base else None

    where, need = _plan_rows(new_rows, new_hashes, stored, delta)
    if any(w is None and p.product_id not in delta.viewed for w, p in zip(where, new_rows)):  # perhaps in the base: its hashes read, checked first
        verify_checksums(state.base, state.base_manifest, only={"photos.json"})
        base_hashes = json.loads((state.base / "photos.json").read_text())
        have_base.update((key(h, p), i) for i, (h, p) in enumerate(zip(base_hashes, base_products)))
        where, need = _plan_rows(new_rows, new_hashes, stored, delta)
    _count_unviewed(state.base_manifest.get("embedded_by"), new_rows, where, delta, report)
    dim = int(state.base_manifest["dim"])
    fresh: dict[str, np.ndarray] = {}
    if need:
        vecs = np.asarray(embed_paths([path for _, path in need]), np.float32)
        if vecs.shape != (len(need), dim):
            raise DeltaError(f"the model gave vectors of shape {vecs.shape} for {len(need)} photos; the index holds "
                             f"{dim}-dim vectors: was it built with another model?")
        fresh = dict(zip((h for h, _ in need), vecs))
    base_vectors = None
    if any(w is not None and w[0] == "base" for w in where):
        verify_checksums(state.base, state.base_manifest, only={"vectors.npy"})
        base_vectors = np.load(state.base / "vectors.npy", mmap_mode="r")
    report.embedded, report.reused = len(need), sum(w is not None for w in where)
    add = [fresh[h] if w is None else state.delta_vectors[w[1]] if w[0] == "delta" else np.asarray(base_vectors[w[1]])
           for h, w in zip(new_hashes, where)]
    report.seconds["embed"] = time.perf_counter() - t1
    add = _blend_views(np.asarray(add, np.float32).reshape(-1, dim), new_rows, delta, embed_views, report)

    t2 = time.perf_counter()
    start = state.manifest.get("next_item_number")
    if start is None:
        start = _next_item_number(base_ids + [r["item_id"] for r in state.delta_items])
    new_items = _items_for(new_rows, state.base_manifest.get("catalog_root", ""), start)
    vectors = np.concatenate([state.delta_vectors[keep], add])
    items = [state.delta_items[j] for j in keep] + [it.to_dict() for it in new_items]
    hashes = [state.delta_hashes[j] for j in keep] + new_hashes
    report.rows_after = n_base - len(removed) + len(items)
    report.method = (f"segmented: the base's {state.base_manifest['index_kind']} index of {n_base} rows kept as it is, "
                     f"{len(removed)} of them deleted, {len(items)} delta rows searched exactly ({100 * share:.1f}% of the base; "
                     + (f"compacted above {100 * compact_above:.0f}%)" if math.isfinite(compact_above) else "not compacted by this delta)"))
    tuning = dict(state.manifest.get("tuning") or {})
    manifest = {
        "format": FORMAT, "version": segments.VERSION, "layout": segments.LAYOUT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model_fingerprint": state.base_manifest["model_fingerprint"],
        "dim": dim, "distance": "euclidean", "count": report.rows_after, "index_kind": segments.LAYOUT,
        "index_params": {"base_kind": state.base_manifest["index_kind"], "base_params": state.base_manifest["index_params"],
                         "removed": len(removed), "delta": len(items)},
        "preprocessing": state.base_manifest.get("preprocessing"), "catalog_root": state.base_manifest.get("catalog_root", ""),
        "embedded_by": state.base_manifest.get("embedded_by") or {}, "next_item_number": start + len(new_items),
        "base": {"count": n_base, "created": state.base_manifest["created"]},
    }
    with atomic_folder(out) as tmp:
        shutil.copytree(state.base, tmp / segments.BASE, copy_function=link_or_copy)  # the base: hard links, no byte copied
        segments.write_delta(tmp, removed, vectors, items, hashes)
        report.seconds["write"] = time.perf_counter() - t2
        report.seconds["total"] = time.perf_counter() - t0
        tuning["updates"] = [*tuning.get("updates", []), report.as_dict()]
        files = [segments.REMOVED, *segments.DELTA_FILES, f"{segments.BASE}/manifest.json"]
        manifest.update(tuning=tuning, checksums={rel: file_sha256(tmp / rel) for rel in files})
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    logger.info("delta: +%d ~%d -%d products, %d photos embedded and %d reused, %s; %d -> %d rows in %.2fs",
                report.products_added, report.products_updated, report.products_removed, report.embedded, report.reused,
                report.method, report.rows_before, report.rows_after, report.seconds["total"])
    return report

"""A searchable catalog: vectors in a ``SearchIndex`` plus item metadata, saved as a verified folder.

Folder layout (written to a temporary folder, then renamed into place)::

    manifest.json   model fingerprint, embedding dim, distance, item count, item ids, kind and
                    settings of the index, how they were tuned (``tuning``: engine chosen and why,
                    recall@k measured against exact search, single-thread queries per second),
                    the preprocessing the crops were cut with, creation time, sha256 and size of
                    every other file
    vectors.npy     float32 (N, D) embeddings
    items.json      the metadata of every vector (product id, name, type, image, scene, box),
                    one list per field (``engine.index.items.ItemTable``; one record per vector in
                    indexes written before it, still read)
    photos.json     sha256 of each row's photo file (products indexes; what ``engine.index.delta``
                    reuses vectors by); absent in indexes built before it
    index/          the backend's own files (``SearchIndex.save``: ScaNN's), empty for brute force
                    and Milvus (whose collection the manifest names, ``engine.index.milvus``)

Loading checks the checksums and, when asked, the model fingerprint, then hands the ``index/``
folder to the backend registered for the manifest's ``index_kind`` (``engine.index.backends``); a
damaged index, one built with another model, or one whose backend data does not match is refused
with a message that says what to rebuild. ``vectors.npy`` is then memory-mapped read-only, not read
into each process: the workers of one machine share its pages (1 GB at 1M x 256), which the page
cache can drop and read again. That relies on a published folder never being written in place
(every write goes to a new folder renamed into place; a file rewritten in place anyway is refused by
the next reload, ``unchanged_since``); removing it while it is mapped is safe.

That is a *flat* folder (manifest version 3; version 1, items as records, is still read). A catalog delta writes a *segmented* one (version 2,
``engine.index.segments``): a flat folder as its ``base/``, plus tombstones and delta rows; loading it
verifies both and searches them as one index (``SegmentedIndex``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.files import atomic_folder, file_sha256
from engine.index.backends import BACKENDS, Backend, BackendSpec, load_search_index
from engine.index.base import BuildRequest, IndexBackendError, SearchIndex
from engine.index import segments
from engine.index.brute_force import BruteForceIndex
from engine.index.items import Item, ItemTable, Match
from engine.index.tuning import TuningConfig

logger = logging.getLogger(__name__)
FORMAT = "showroom.index"
VERSION = 3  # a flat folder written now: items.json by column (2 is the segmented layout's, engine.index.segments)
FLAT_VERSIONS = (1, VERSION)  # flat folders read: 1 wrote items.json as one record per row


class IndexFolderError(ValueError):
    """An index folder that is missing, damaged, or built with another model."""


def row_hashes(vectors: np.ndarray | segments.LiveRows) -> np.ndarray:
    """uint64 (N,): a 64-bit hash of each row's float32 bits of ``vectors`` (N, D) (an array or
    ``segments.LiveRows``), read 65,536 rows at a time; equal rows hash equal, in any index."""
    n = len(vectors)
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, size=vectors.shape[1], dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(n, np.uint64)
    for s in range(0, n, 65_536):
        hashes[s : s + 65_536] = (_bits(vectors, slice(s, s + 65_536)).astype(np.uint64) * weights).sum(1)  # wraps mod 2**64
    return hashes


def _bits(vectors, rows) -> np.ndarray:
    """uint32 (len(rows), D): the float32 bits of ``vectors[rows]`` (only these rows read: ``LiveRows`` too)."""
    return np.ascontiguousarray(vectors[rows], np.float32).reshape(-1, vectors.shape[1]).view(np.uint32)


def identical_rows(vectors: np.ndarray | segments.LiveRows, hashes: np.ndarray | None = None) -> np.ndarray:
    """int64 (N,): a group number per row of ``vectors`` float32 (N, D) (an array or ``segments.LiveRows``),
    equal exactly for identical rows.

    Rows are grouped by their ``row_hashes`` (given, e.g. a segment's base rows hashed when the base
    was loaded, or computed: linear time, about 1 s for 1M x 256, where ``np.unique(axis=0)`` sorts
    whole rows in ~18 s); the rows of each group of several are compared, and a group whose rows
    turn out not all equal (a hash collision) is split by the rows themselves."""
    n = len(vectors)
    if not n:
        return np.zeros(0, np.int64)
    if hashes is None:
        hashes = row_hashes(vectors)
    elif len(hashes) != n:
        raise ValueError(f"{len(hashes)} row hashes for {n} rows")
    _, group, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    group = group.reshape(-1).astype(np.int64)
    several = np.flatnonzero(counts > 1)
    if not len(several):
        return group
    order = np.argsort(group, kind="stable")  # each group's rows side by side (not a scan of N rows per group)
    starts = np.concatenate([[0], np.cumsum(counts)])
    next_group = len(counts)
    for g in several.tolist():
        rows = order[starts[g] : starts[g + 1]]
        same = _bits(vectors, rows)
        if not (same == same[0]).all():  # a collision: split the rows exactly
            sub = np.unique(same, axis=0, return_inverse=True)[1].reshape(-1)
            for j in range(1, int(sub.max()) + 1):
                group[rows[sub == j]] = next_group
                next_group += 1
    return group


class CatalogIndex:
    """Vectors + metadata. ``search`` can restrict results to chosen types."""

    def __init__(self, vectors: np.ndarray | segments.LiveRows, items: Sequence[Item], index: SearchIndex, model_fingerprint: str, created: str = "",
                 preprocessing: dict | None = None, catalog_root: str = "", tuning: dict | None = None, *,
                 hashes: np.ndarray | None = None) -> None:
        if len(vectors) != len(items):
            raise ValueError(f"{len(vectors)} vectors but {len(items)} items")
        # float32 (N, D); a segmented index's rows are read through to its base and delta, not copied
        self.vectors = vectors if isinstance(vectors, segments.LiveRows) else np.asarray(vectors, np.float32)
        self.items = ItemTable.from_items(items)  # one list per field; reads like a list of Items
        self.index = index
        self.model_fingerprint = model_fingerprint
        self.created = created or datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.preprocessing = dict(preprocessing or {})  # how the indexed crops were cut (engine.config.Preprocessing)
        self.catalog_root = catalog_root  # where items' relative image paths were, when it was built
        self.tuning = tuning  # engine.index.tuning.Tuning as a dict (None: settings given, not tuned)
        self.embedded_by: dict = {}  # the runner that computed the vectors ({"runner": "local"|"ray", ...}; {}: not recorded)
        self.photo_hashes: list[str] | None = None  # sha256 of each row's photo file, when known (engine.index.delta)
        self._base: _Flat | None = None  # the flat index this one was loaded from or over (``load``'s ``reuse``)
        self._base_key = ""
        self._key, self._stats = "", {}  # a segmented index: its folder's manifest sha256 and files as read (``load``'s ``reuse``)
        self._types = np.array(self.items.column("type"))
        self._by_product = _rows_by_key(self.items.column("product_id"))
        self._row: dict[str, int] = dict(zip(self.items.column("item_id"), range(len(self.items))))
        # rows with identical vectors are one image (the same photo under several product ids)
        self._image_group = identical_rows(self.vectors, hashes)  # hashes: uint64 (N,) row_hashes, when known
        # only photos shared by several items, so a result's look-up is a dict hit, not a scan of N rows
        groups, counts = np.unique(self._image_group, return_counts=True)
        self._shared: dict[int, list[int]] = {}
        for row in np.flatnonzero(np.isin(self._image_group, groups[counts > 1])).tolist():
            self._shared.setdefault(int(self._image_group[row]), []).append(row)

    def items_of(self, product_id: str) -> list[Item]:
        """The items (images) of one product, in index order; empty if unknown."""
        return [self.items[i] for i in self._by_product.get(product_id, [])]

    def image_path(self, item: Item, root: str | Path | None = None) -> Path:
        """Where ``item``'s image is: under ``root`` (a moved catalog), else the build-time catalog root."""
        return Path(root or self.catalog_root) / item.image

    def image_number(self, item: Item) -> int:
        """Which of its product's images ``item`` is (0 for the first)."""
        return self._by_product.get(item.product_id, []).index(self._row[item.item_id]) if item.item_id in self._row else 0

    def same_image(self, item: Item) -> list[Item]:
        """Other items whose image is identical to ``item``'s (equal embeddings)."""
        row = self._row.get(item.item_id)
        if row is None:
            return []
        return [self.items[j] for j in self._shared.get(int(self._image_group[row]), ()) if j != row]

    def search_distinct(self, queries: np.ndarray, k: int, types: Set[str] | None = None, *, overfetch: int = 4) -> list[list[Match]]:
        """Like ``search``, but each product and each distinct image at most once: the best match of a
        product with several images, and one of several products sharing the same photo."""
        out = []
        for matches in self.search(queries, min(len(self.items), k * overfetch), types):
            seen_products, seen_images, keep = set(), set(), []
            for m in matches:
                group = self._image_group[self._row[m.item.item_id]]
                if m.item.product_id in seen_products or group in seen_images:
                    continue
                seen_products.add(m.item.product_id)
                seen_images.add(group)
                keep.append(m)
                if len(keep) == k:
                    break
            out.append(keep)
        return out

    def rows_of(self, product_id: str) -> list[int]:
        """Row numbers of one product's vectors."""
        return list(self._by_product.get(product_id, []))

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, items: list[Item], model_fingerprint: str, backend: BackendSpec = BackendSpec(),
                     preprocessing: dict | None = None, catalog_root: str = "", tuning: TuningConfig | None = None,
                     queries: np.ndarray | None = None, queries_label: str = "given query vectors", *,
                     backends: Mapping[str, Backend] = BACKENDS) -> CatalogIndex:
        """Index ``vectors`` float32 (N, D), one row per item, with ``backend`` (looked up in ``backends``):
        tuned to ``tuning.target_recall`` on ``queries`` (float32 (Q, D); ``None``: a sample of the
        vectors) when ``tuning`` is given and the backend has a tuner (ScaNN), else with its settings as
        they are. A backend that measures its own recall (Milvus) measures it on the same queries, with
        ``tuning``'s k, sample size and seed; what was tuned or measured is stored as ``tuning``."""
        meta = [{"item_id": it.item_id, "product_id": it.product_id, "type": it.type} for it in items]
        sample = {} if tuning is None else {"k": tuning.k, "n_queries": tuning.n_queries, "seed": tuning.seed}
        request = BuildRequest(vectors, model_fingerprint, meta, queries, queries_label, **sample)
        index, record = backend.build(request, tuning, backends=backends)
        return cls(vectors, items, index, model_fingerprint, preprocessing=preprocessing, catalog_root=catalog_root, tuning=record)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def types(self) -> list[str]:
        return sorted(set(self._types.tolist()))

    def search(self, queries: np.ndarray, k: int, types: Set[str] | None = None) -> list[list[Match]]:
        """Top-k matches per query (``float32 (Q, D)``), optionally only among items of ``types``.

        A type filter searches exactly within the chosen items when they are few, and otherwise
        over-fetches from the ANN index and filters.
        """
        queries = np.asarray(queries, np.float32)
        if not len(self.items):
            return [[] for _ in queries]
        if types:
            rows = np.flatnonzero(np.isin(self._types, list(types)))
            if len(rows) == 0:
                return [[] for _ in queries]
            if len(rows) <= 50_000:
                nn = BruteForceIndex(self.vectors[rows]).search(queries, k)
                return [[Match(self.items[rows[j]], float(d)) for j, d in zip(ix, ds)] for ix, ds in zip(nn.indices, nn.distances)]
            nn = self.index.search(queries, min(len(self.items), k * 20))
            out = []
            for ix, ds in zip(nn.indices, nn.distances):
                keep = [Match(self.items[j], float(d)) for j, d in zip(ix, ds) if self._types[j] in types]
                out.append(keep[:k])
            return out
        nn = self.index.search(queries, k)
        return [[Match(self.items[j], float(d)) for j, d in zip(ix, ds)] for ix, ds in zip(nn.indices, nn.distances)]

    def save(self, folder: Path) -> Path:
        """Write atomically: a temporary sibling folder, renamed into place (replacing an old index)."""
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            np.save(tmp / "vectors.npy", self.vectors)
            (tmp / "items.json").write_text(json.dumps(self.items.to_json()))
            if self.photo_hashes is not None:
                if len(self.photo_hashes) != len(self.items):
                    raise ValueError(f"{len(self.photo_hashes)} photo hashes for {len(self.items)} items")
                (tmp / "photos.json").write_text(json.dumps(self.photo_hashes))
            (tmp / "index").mkdir()
            self.index.save(tmp / "index")
            files = sorted(p for p in tmp.rglob("*") if p.is_file())
            manifest = {
                "format": FORMAT, "version": VERSION, "created": self.created,
                "model_fingerprint": self.model_fingerprint, "dim": int(self.vectors.shape[1]) if len(self.vectors) else 0,
                "distance": "euclidean", "count": len(self.items), "item_ids": self.items.column("item_id"),
                "index_kind": self.index.kind, "index_params": self.index.describe(), "tuning": self.tuning, "preprocessing": self.preprocessing,
                "catalog_root": self.catalog_root, "embedded_by": self.embedded_by,
                "checksums": {str(p.relative_to(tmp)): file_sha256(p) for p in files},
                "sizes": {str(p.relative_to(tmp)): p.stat().st_size for p in files},  # what a segmented delta checks the base by
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        return folder

    @classmethod
    def load(cls, folder: Path, *, model_fingerprint: str | None = None, backends: Mapping[str, Backend] = BACKENDS,
             reuse: CatalogIndex | None = None) -> CatalogIndex:
        """Load and verify an index folder, flat or segmented (``engine.index.segments``), its index by the
        class ``backends`` registers for its kind; refuse a damaged one or one built with another model.

        ``reuse``: an index loaded before (the one a server serves). When ``folder`` is segmented and its
        base is the same flat index as ``reuse``'s (its ``base/manifest.json``, which checksums every
        base file, has the same sha256), that base is taken from memory, already verified, instead of
        being read and hashed again: a reload after a delta costs the delta's rows, not the base's.
        When ``folder`` is the very index ``reuse`` was loaded from (the scenes index a delta carries
        over by hard link; a reload that published nothing new), ``reuse`` itself is returned. Either only while the folder's files
        are the very files that were read and verified then (``unchanged_since``: the same inode, size
        and modification time, so a file replaced, truncated or rewritten in place since is read, and
        refused, instead of passed over); else the folder is read and verified as usual."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest.get("layout") != segments.LAYOUT:
            key = file_sha256(folder / "manifest.json")
            if (reuse is not None and reuse._base_key == key and reuse._base is not None and reuse.index is reuse._base.index
                    and unchanged_since(folder, reuse._base.stats)):
                check_model(folder, manifest, model_fingerprint)
                logger.info("%s: the same index as the one already loaded (%d rows): reused, not read again", folder, len(reuse))
                return reuse  # the same bytes (its manifest checksums every file), never written after it was published
            flat = _read_flat(folder, manifest, model_fingerprint, backends)
            return cls._assemble(flat, base=flat, base_key=key)
        key = manifest["checksums"][f"{segments.BASE}/manifest.json"]
        own_key = file_sha256(folder / "manifest.json")
        if (reuse is not None and reuse._key == own_key and reuse._base is not None and reuse._base_key == key
                and unchanged_since(folder, reuse._stats) and unchanged_since(folder / segments.BASE, reuse._base.stats)):
            check_model(folder, manifest, model_fingerprint)
            logger.info("%s: the same segmented index as the one already loaded (%d rows): reused, not read again", folder, len(reuse))
            return reuse  # a reload that published nothing new (its manifest checksums the segment and the base's manifest)
        try:
            own_stats = file_stats(folder, ["manifest.json", *manifest["checksums"]])  # before reading: a later change shows
        except OSError:
            own_stats = {}  # a missing file: verify_checksums names it
        verify_checksums(folder, manifest)
        check_model(folder, manifest, model_fingerprint)
        base_manifest = read_manifest(folder / segments.BASE)
        if reuse is not None and reuse._base is not None and reuse._base_key == key and unchanged_since(folder / segments.BASE, reuse._base.stats):
            base = reuse._base
            logger.info("%s: its base (%d rows) is the one already loaded: reused, not read again", folder, len(base.items))
        else:
            base = _read_flat(folder / segments.BASE, base_manifest, manifest["model_fingerprint"], backends)
        try:
            removed, delta_vectors, delta_items, delta_hashes = segments.read_delta(folder, base.vectors.shape[1])
            search_index = segments.SegmentedIndex(base.index, removed, delta_vectors)
        except (ValueError, KeyError, OSError) as exc:
            raise IndexFolderError(f"{folder}: its delta segment is damaged ({exc}); {REBUILD}") from None
        if base.hashes is None:
            raise IndexFolderError(f"{folder}: its base has no photos.json; {REBUILD}")
        live = segments.live_base_rows(len(base.items), removed)
        items = base.items.take(live) + ItemTable.from_records(delta_items)
        if len(items) != manifest["count"]:
            raise IndexFolderError(f"{folder}: {len(items)} live rows, the manifest says {manifest['count']}; {REBUILD}")
        vectors = segments.LiveRows(base.vectors, live, delta_vectors)
        hashes = np.concatenate([base.row_hashes[live], row_hashes(delta_vectors)]) if base.row_hashes is not None else None
        loaded = cls._assemble(_Flat(manifest, vectors, items, search_index, [base.hashes[i] for i in live.tolist()] + delta_hashes,
                                     row_hashes=hashes), base=base, base_key=key)
        loaded._key, loaded._stats = own_key, own_stats  # what a later load of this very folder reuses
        return loaded

    @classmethod
    def _assemble(cls, flat: _Flat, base: _Flat | None = None, base_key: str = "") -> CatalogIndex:
        m = flat.manifest
        loaded = cls(flat.vectors, flat.items, flat.index, m["model_fingerprint"], m["created"], m.get("preprocessing"),
                     m.get("catalog_root", ""), m.get("tuning"), hashes=flat.row_hashes)
        loaded.embedded_by = m.get("embedded_by") or {}
        loaded.photo_hashes = flat.hashes
        loaded._base, loaded._base_key = base, base_key  # what a later load of a segment over the same base reuses
        return loaded


REBUILD = "rebuild it with python -m serving.build_index"


def _rows_by_key(keys: Sequence[str]) -> dict[str, list[int]]:
    """Each key's row numbers, ascending: the rows of each product. Built from each key's first row
    (``dict`` over the reversed keys, in C), then only the rows after a first one appended: about 4x
    faster than a ``setdefault`` per row at 1M rows, most of them a product's only one."""
    n = len(keys)
    first = dict(zip(reversed(keys), range(n - 1, -1, -1)))
    out = {k: [i] for k, i in first.items()}
    if len(first) < n:
        for i, k in enumerate(keys):
            if first[k] != i:
                out[k].append(i)
    return out


@dataclass(frozen=True, eq=False)
class _Flat:
    """What a verified index folder holds: its manifest, vectors float32 (N, D) (``segments.LiveRows`` for a
    segmented one), items, search index and photo hashes."""

    manifest: dict
    vectors: np.ndarray | segments.LiveRows
    items: ItemTable
    index: SearchIndex
    hashes: list[str] | None
    stats: Mapping[str, FileStat] = field(default_factory=dict)  # the files as they were read (``unchanged_since``)
    row_hashes: np.ndarray | None = None  # uint64 (N,) ``row_hashes`` of the vectors: a segment over this base hashes only its own rows


def read_manifest(folder: Path) -> dict:
    """The parsed ``manifest.json`` of an index folder, flat or segmented; ``IndexFolderError`` when it is
    missing, damaged, of another format or version, or lacks a field every index has."""
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise IndexFolderError(f"{folder} is not a Showroom index (no manifest.json); {REBUILD}")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise IndexFolderError(f"{mpath} is damaged ({exc}); {REBUILD}") from None
    segmented = manifest.get("layout") == segments.LAYOUT
    if manifest.get("format") != FORMAT or manifest.get("version") not in ((segments.VERSION,) if segmented else FLAT_VERSIONS):
        raise IndexFolderError(f"{folder} is a {manifest.get('format')} v{manifest.get('version')} index, expected {FORMAT} "
                               f"v{' or v'.join(map(str, FLAT_VERSIONS))} (or v{segments.VERSION}, segmented); {REBUILD}")
    need = ("checksums", "model_fingerprint", "count", "index_kind", "index_params", "created") + (() if segmented else ("item_ids",))
    missing = [k for k in need if k not in manifest]
    if missing:
        raise IndexFolderError(f"{mpath} lacks {', '.join(missing)}: it is damaged or not written by Showroom; {REBUILD}")
    return manifest


FileStat = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


def file_stats(folder: Path, names: Iterable[str]) -> dict[str, FileStat]:
    """Each file's identity (device, inode, size, modification time in ns), taken before it is read:
    a file changed after this differs from it."""
    out = {}
    for rel in names:
        st = (Path(folder) / rel).stat()
        out[rel] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def unchanged_since(folder: Path, stats: Mapping[str, FileStat]) -> bool:
    """Whether ``folder`` holds the very files ``stats`` describes (the same inode, size and modification
    time: a hard link of them counts, a copy does not): what reusing an index already verified in
    memory asks of the folder (a coarse file clock could hide a same-size rewrite within one tick)."""
    if not stats:
        return False
    try:
        return file_stats(folder, stats) == dict(stats)
    except OSError:
        return False


def moved_files(folder: Path, manifest: dict) -> list[str]:
    """The files the manifest checksums that are missing, or not of the size it records (a manifest
    with sizes: every flat one written since they are recorded)."""
    sizes = manifest.get("sizes") or {}
    bad = []
    for rel in manifest["checksums"]:
        try:
            if (Path(folder) / rel).stat().st_size != sizes.get(rel):
                bad.append(rel)
        except OSError:
            bad.append(rel)
    return bad


def verify_checksums(folder: Path, manifest: dict, only: Set[str] | None = None) -> None:
    """Every file the manifest checksums (or those of them in ``only``) is there with its sha256."""
    for rel, digest in manifest["checksums"].items():
        if only is not None and rel not in only:
            continue
        p = Path(folder) / rel
        if not p.is_file() or file_sha256(p) != digest:
            raise IndexFolderError(f"{folder}: {rel} is missing or damaged (checksum mismatch); {REBUILD}")


def check_model(folder: Path, manifest: dict, model_fingerprint: str | None) -> None:
    """Refuse (``IndexFolderError``) an index folder whose manifest names another model than ``model_fingerprint`` (None: any)."""
    if model_fingerprint is not None and manifest["model_fingerprint"] != model_fingerprint:
        raise IndexFolderError(
            f"{folder} was built with model {manifest['model_fingerprint'][:12]}, but the loaded model is "
            f"{model_fingerprint[:12]}; {REBUILD} --model <the model you serve>"
        )


def _read_flat(folder: Path, manifest: dict, model_fingerprint: str | None, backends: Mapping[str, Backend]) -> _Flat:
    """A flat (version 1) index folder, verified: checksums, model, items against the manifest, the backend's data."""
    if manifest.get("layout") == segments.LAYOUT:
        raise IndexFolderError(f"{folder}: a segmented index cannot be the base of another; {REBUILD}")
    try:
        stats = file_stats(folder, ["manifest.json", *manifest["checksums"]])  # before reading: a later change shows
    except OSError:
        stats = {}  # a missing file: verify_checksums names it
    verify_checksums(folder, manifest)
    check_model(folder, manifest, model_fingerprint)
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")  # verified above; shared between processes, read-only
    try:
        items = ItemTable.from_json(json.loads((folder / "items.json").read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexFolderError(f"{folder}: items.json is not an item table ({exc}); {REBUILD}") from None
    if len(items) != manifest["count"] or items.column("item_id") != manifest["item_ids"]:
        raise IndexFolderError(f"{folder}: items do not match the manifest; {REBUILD}")
    try:  # a backend holding the vectors elsewhere (Milvus) checks they are these rows, filled by the manifest's model
        index = load_search_index(manifest["index_kind"], folder / "index", vectors, manifest["index_params"],
                                  model_fingerprint=manifest["model_fingerprint"], backends=backends)
    except IndexBackendError as exc:
        raise IndexFolderError(f"{folder}: {exc}") from None
    hashes = None
    if (folder / "photos.json").is_file():
        hashes = json.loads((folder / "photos.json").read_text())
        if len(hashes) != len(items):
            raise IndexFolderError(f"{folder}: photos.json lists {len(hashes)} photos for {len(items)} items; {REBUILD}")
    return _Flat(manifest, vectors, items, index, hashes, stats, row_hashes(vectors))

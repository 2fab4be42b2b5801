"""A catalog delta published as the next generation of a serving folder: what ``build_index --add/
--update/--remove`` and ``POST /api/catalog`` share.

``publish_delta`` makes the next generation from the current one under the build lock
(``engine.index.generations.publish_generation``): the model, scenes index and calibration carried
over by hard link, the products index changed by ``engine.index.delta.write_delta_folder``.
``stage_photos`` takes the API's uploaded rows and photos: each photo checked like an upload,
then like a catalog's, and kept content-addressed under the serving folder's ``photos/`` (outside
every generation, so pruning a generation never removes a photo a newer one shows).
``stage_views`` takes the in-room views of those products (``training.synthesize --only``'s
manifest and images) for the delta to blend, as ``build_index --add --views`` does; they are
embedded from a temporary folder and not kept.
``BackgroundCompactor`` compacts the products index off the request path: an API delta is always
written segmented (its cost bounded by its own rows), and once the segments pass ``COMPACT_ABOVE``
of the base, one thread of the worker that published it makes the next generation flat and serves it.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np

from engine.calibration import FILE as CALIBRATION_FILE
from engine.data.catalog import CatalogError, ProductImage, check_product_images, read_product_rows
from engine.config import ImageLimits
from engine.data.images import ImageError, check_limits, load_image, read_header
from engine.files import link_or_copy
from engine.index.catalog_index import CatalogIndex, read_manifest
from engine.index.delta import CatalogDelta, DeltaError, DeltaReport, compacted, write_delta_folder
from engine.index.generations import MODEL_FILE, PHOTOS, ServingFolderError, publish_generation, resolve_serving_folder
from engine.index.segments import COMPACT_ABOVE, share_changed_of
from engine.index.serving_folder import PRODUCTS, SCENES, photo_images
from engine.index.views import ProductViews, view_crops
from engine.model.embedder import Embedder, model_fingerprint, read_ahead

logger = logging.getLogger(__name__)
MAX_API_ROWS = 100  # rows of --add / --update one POST /api/catalog may carry
MAX_API_VIEWS = 8 * MAX_API_ROWS  # in-room views one POST /api/catalog may carry (training.synthesize makes 2 a product)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def publish_delta(out: Path, delta: CatalogDelta, embedder_for: Callable[[Path, str], Embedder], *, model: str | None = None,
                  calibrate: Callable[[Path], None] | None = None, compact: bool = False, compact_above: float = COMPACT_ABOVE,
                  target_recall: float = 0.95, n_queries: int = 200, seed: int = 0, keep: int = 3) -> tuple[Path, dict]:
    """Publish ``out``'s next generation: its current one changed by ``delta`` (``--compact`` alone when
    ``delta`` is empty and ``compact``; a new calibration alone when empty and ``calibrate`` is given).

    embedder_for(current generation, its model's sha256) → the embedder of that model, called only when
    photos need embedding; model: the sha256 the generation's model must have (``DeltaError`` otherwise);
    calibrate(new generation folder): writes its calibration (else the current one is carried over).
    Returns (the new generation's folder, the report: ``DeltaReport`` fields and ``source``)."""
    report: dict = {}

    def write(tmp: Path) -> None:
        current = resolve_serving_folder(out)  # read under the build lock: a concurrent delta cannot be lost
        fingerprint = model_fingerprint(current / MODEL_FILE)  # the file's hash: no model is loaded unless photos need embedding
        if model is not None and model != fingerprint:
            raise DeltaError(f"--model is not the model of {current.name}: a delta keeps the generation's model; "
                             "build a full index to serve another model")

        loaded: list[Embedder] = []

        def embedder() -> Embedder:  # loaded once, and only when something needs embedding
            if not loaded:
                loaded.append(embedder_for(current, fingerprint))
            return loaded[0]

        def embed(paths) -> np.ndarray:
            return embedder()(photo_images(paths, embedder().preprocessing))

        def embed_views(views) -> np.ndarray:  # as room crops, as a full build embeds them
            prep = embedder().preprocessing
            return embedder()(read_ahead(view_crops(views, prep.image_size, prep.crop_padding)))

        link_or_copy(current / MODEL_FILE, tmp / MODEL_FILE)
        if not delta and compact:  # the same products in one flat index
            products = compacted(CatalogIndex.load(current / PRODUCTS, model_fingerprint=fingerprint))
            products.save(tmp / PRODUCTS)
            report.update(DeltaReport(rows_before=len(products), rows_after=len(products),
                                      method="compacted into one flat index").as_dict())
        elif not delta:  # a new calibrator alone: the same products
            CatalogIndex.load(current / PRODUCTS, model_fingerprint=fingerprint)  # verified before it is carried over
            count = read_manifest(current / PRODUCTS)["count"]
            shutil.copytree(current / PRODUCTS, tmp / PRODUCTS, copy_function=link_or_copy)
            report.update(DeltaReport(rows_before=count, rows_after=count, method="products carried over").as_dict())
        else:
            scenes = current / SCENES / "vectors.npy"
            rep = write_delta_folder(current / PRODUCTS, tmp / PRODUCTS, delta, embed, model_fingerprint=fingerprint,
                                     queries=(lambda: np.load(scenes)) if scenes.is_file() else None, target_recall=target_recall,
                                     k=10, n_queries=n_queries, seed=seed, compact=compact, compact_above=compact_above,
                                     embed_views=embed_views)
            report.update(rep.as_dict())
        if (current / SCENES).is_dir():
            shutil.copytree(current / SCENES, tmp / SCENES, copy_function=link_or_copy)
        if calibrate is not None:
            calibrate(tmp)
        elif (current / CALIBRATION_FILE).is_file():
            link_or_copy(current / CALIBRATION_FILE, tmp / CALIBRATION_FILE)
        report.update(source=current.name)

    generation = publish_generation(out, write, keep=keep)
    return generation, report


def compaction_share(folder: Path) -> float:
    """Tombstones plus delta rows of the serving folder's current products index, as a share of its base's rows."""
    return share_changed_of(read_manifest(resolve_serving_folder(folder) / PRODUCTS))


def _no_embedding(generation: Path, model: str) -> Embedder:
    raise DeltaError("a compaction embeds no photo")  # publish_delta asks only when a delta adds photos


class BackgroundCompactor:
    """Compacts a serving folder's products index in a thread, one compaction at a time in a process.

    ``request()`` starts it when the current generation's segments pass ``above`` of its base (and
    none runs here); the thread publishes the current generation compacted (``publish_delta`` with
    ``compact=True``: under the folder's build lock, so a delta published meanwhile is included or,
    arriving during it, refused with 409 as for any busy folder) and then calls ``reload`` (the
    caller serves it: ``ServingState.reload`` publishes it to every worker). Another builder holding
    the lock is waited for (``retry_seconds``, up to ``attempts`` times); the share is read again each
    time, so a compaction another process made is not repeated. Failures are logged: the segmented
    generation stays served, and the next delta asks again."""

    def __init__(self, folder: str | Path, reload: Callable[[], object], *, above: float = COMPACT_ABOVE,
                 retry_seconds: float = 5.0, attempts: int = 12) -> None:
        self.folder, self._reload, self.above = Path(folder), reload, above
        self._retry, self._attempts = retry_seconds, attempts
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last: dict | None = None  # the last compaction's report (``publish_delta``'s), or {"error": why}

    def request(self) -> str:
        """"started", "running" (one is under way in this process), "not due", or "not checked" (the
        current generation's manifest could not be read: logged; the delta itself is published)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return "running"
            try:
                share = compaction_share(self.folder)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("whether %s needs compacting is unknown: %s", self.folder, exc)
                return "not checked"
            if share <= self.above:
                return "not due"
            # not a daemon: an exiting worker finishes the generation it is writing (a killed one leaves debris the next build removes)
            self._thread = threading.Thread(target=self._run, name="showroom-compaction")
            self._thread.start()
            return "started"

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a compaction under way; True when none runs (any more)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            for attempt in range(self._attempts):
                share = compaction_share(self.folder)
                if share <= self.above:
                    logger.info("compaction not needed any more: %.1f%% of the base changed", 100 * share)
                    return
                try:
                    generation, report = publish_delta(self.folder, CatalogDelta(), _no_embedding, compact=True)
                    break
                except ServingFolderError as exc:  # another build holds the folder: wait for it
                    logger.info("compaction waits (%s); attempt %d of %d", exc, attempt + 1, self._attempts)
                    time.sleep(self._retry)
            else:
                self.last = {"error": f"the folder stayed busy for {self._attempts} attempts"}
                logger.error("compaction of %s given up: %s", self.folder, self.last["error"])
                return
            logger.info("compacted %s into generation %s (%d rows, %.1f%% of the base had changed) in %.1fs", self.folder, generation.name,
                        report["rows_after"], 100 * share, time.perf_counter() - t0)
            self.last = report
            self._reload()
        except Exception as exc:  # a worker's thread: logged, never raised into nothing
            self.last = {"error": str(exc)}
            logger.exception("compaction of %s failed; the segmented generation stays served", self.folder)


def stage_photos(out: Path, tables: Mapping[str, bytes], photos: Mapping[str, bytes], *, limits: ImageLimits = ImageLimits(),
                 max_rows: int = MAX_API_ROWS) -> tuple[dict[str, tuple[ProductImage, ...]], list[Path]]:
    """The rows of ``tables`` (``"add"`` / ``"update"`` → a CSV in products.csv's format whose ``image``
    column names one of ``photos``: uploaded file name → bytes), each photo checked (header within
    ``limits``, then decoded and hashed as a catalog's photo) and stored as ``out/photos/<sha256><suffix>``,
    which the rows then name; and the files this call added to the store (for the caller to remove if
    the update is then refused). ``CatalogError`` (nothing kept) for a bad table, name, photo or count."""
    _check_uploads(photos, limits, "photo")
    store = Path(out) / PHOTOS
    store.mkdir(parents=True, exist_ok=True)
    staged: dict[str, tuple[ProductImage, ...]] = {}
    with tempfile.TemporaryDirectory(dir=store, prefix=".incoming-") as tmp:
        tmp = Path(tmp)
        for name, data in photos.items():
            (tmp / name).write_bytes(data)
        total = 0
        for what, table in tables.items():
            named = _image_names(table, what)
            total += len(named)
            if total > max_rows:
                raise CatalogError(f"{total} rows to add or update in one request; at most {max_rows}: send them in several")
            unknown = [n for n in named if n not in photos]
            if unknown:
                raise CatalogError(f"{what}: image {unknown[0]!r} is not one of the uploaded photos "
                                   f"({', '.join(sorted(photos)) or 'none'})")
            path = tmp / f"{what}.csv"
            path.write_bytes(table)
            try:
                staged[what] = tuple(check_product_images(read_product_rows(path, tmp)[0], path))
            except CatalogError as exc:  # named as the client sent it, not by this server's paths
                raise CatalogError(str(exc).replace(f"{tmp}{os.sep}", "")) from None
        added: list[Path] = []
        for what, rows in staged.items():
            kept = []
            for p in rows:
                target = store / f"{p.sha256}{p.image.suffix.lower()}"
                if not target.exists():  # content-addressed: the same bytes are kept once, never overwritten
                    os.replace(p.image, target)
                    added.append(target)
                else:  # kept again: young, so no publish collects it before this delta names it
                    os.utime(target)
                kept.append(replace(p, image=target.resolve()))
            staged[what] = tuple(kept)
    logger.info("catalog update: %d photos checked, %d new in %s", sum(len(r) for r in staged.values()), len(added), store)
    return staged, added


def stage_views(tmp: Path, manifest: bytes, files: Mapping[str, bytes], rows: Sequence[ProductImage], weight: float, *,
                manifest_name: str = "views", limits: ImageLimits = ImageLimits(), max_views: int = MAX_API_VIEWS) -> ProductViews:
    """The in-room views of ``rows``' products (a delta's staged added and updated rows) from an uploaded
    synthetic-views ``manifest`` (``training.synthesize``'s manifest.json) and its view images
    (``files``: uploaded file name → bytes, each matched to a view by its image's file name), written
    under ``tmp`` (the caller's folder, kept until the delta is published), as ``ProductViews`` at
    ``weight`` recorded by the manifest's sha256. Views of other products in the manifest are left out,
    as ``training.synthesis.delta_views`` leaves them. ``CatalogError`` when a view file's name, header
    or pixels, a view's image path or box, or the manifest (none of these products, another type,
    views of a replaced photo) does not fit, or a view file is named by none of the kept views."""
    from training.synthesis import SyntheticManifestError, delta_views, load_synthetic_manifest

    _check_uploads(files, limits, "view")
    tmp = Path(tmp)
    path = tmp / "manifest.json"
    path.write_bytes(manifest)
    products = {p.product_id for p in rows}
    try:
        wanted = [v for v in load_synthetic_manifest(path).views if v.product_id in products]
    except SyntheticManifestError as exc:
        raise CatalogError(str(exc).replace(str(path), manifest_name)) from None
    if len(wanted) > max_views:
        raise CatalogError(f"{len(wanted)} in-room views of this delta's products in one request; at most {max_views}: send them in several")
    named: dict[str, PurePosixPath] = {}
    for v in wanted:
        rel = PurePosixPath(v.image)
        if rel.is_absolute() or ".." in rel.parts or not _SAFE_NAME.match(rel.name):
            raise CatalogError(f"{manifest_name}: view image {v.image!r} of {v.product_id!r} is not a plain relative file name")
        if rel.name not in files:
            raise CatalogError(f"{manifest_name}: view image {rel.name!r} of {v.product_id!r} is not one of the uploaded view files "
                               f"({', '.join(sorted(files)) or 'none'})")
        if named.setdefault(rel.name, rel) != rel:
            raise CatalogError(f"{manifest_name}: two views' images are named {rel.name!r} ({named[rel.name]}, {rel})")
    stray = sorted(set(files) - set(named))
    if stray:
        raise CatalogError(f"view file(s) {', '.join(stray[:5])} named by no view of this delta's products in {manifest_name}")
    for name, rel in named.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(files[name])
    try:
        views = delta_views(path, rows, weight)
    except SyntheticManifestError as exc:  # named as the client sent them, not by this server's paths
        why = str(exc).replace(str(path), manifest_name)
        for p in rows:
            why = why.replace(str(p.image), f"the uploaded photo of {p.product_id!r}")
        raise CatalogError(why) from None
    for v in views.views:  # decoded now: a view that cannot be read is the client's error, before anything is embedded
        try:
            h, w = load_image(v.image).shape[:2]
        except ImageError as exc:
            raise CatalogError(f"view {v.image.name} of {v.product_id!r}: {exc}".replace(f"{tmp}{os.sep}", "")) from None
        x1, y1, x2, y2 = v.box
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise CatalogError(f"view {v.image.name} of {v.product_id!r}: box {list(v.box)} is not inside its {w}x{h} image")
    logger.info("catalog update: %d in-room views of %d products staged from %s", len(views.views),
                len({v.product_id for v in views.views}), manifest_name)
    return replace(views, source=f"uploaded {manifest_name}")


def _check_uploads(files: Mapping[str, bytes], limits: ImageLimits, what: str) -> None:
    """``CatalogError`` for an uploaded image (file name → bytes) with an unsafe name or suffix, or a
    header outside ``limits`` (nothing is decoded here)."""
    for name, data in files.items():
        if not _SAFE_NAME.match(name) or Path(name).suffix.lower() not in _PHOTO_SUFFIXES:
            raise CatalogError(f"{what} file name {name!r}: use letters, digits, '.', '_' or '-' and a "
                               f"{'/'.join(sorted(_PHOTO_SUFFIXES))} suffix")
        try:
            check_limits(read_header(data, source=name), limits, source=name)
        except ImageError as exc:
            raise CatalogError(str(exc)) from None


def _image_names(table: bytes, what: str) -> list[str]:
    """The ``image`` column of an uploaded products table, one per row (checked before any path is made of them)."""
    try:
        reader = csv.DictReader(io.StringIO(table.decode("utf-8-sig")))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CatalogError(f"{what}: not a UTF-8 CSV table ({exc})") from None
    if "image" not in (reader.fieldnames or []):
        raise CatalogError(f"{what}: no 'image' column; header is {reader.fieldnames}. Required are product_id, name, type, image")
    return [(row.get("image") or "").strip() for row in rows]

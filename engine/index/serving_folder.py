"""Build the two search indexes of a catalog with a trained embedder: products and scene crops.

Both indexes are built by one ``BackendSpec`` (``engine.index.backends``), each with its own
``backend.named(products|scenes)``. With a ``TuningConfig`` each is tuned to its recall target when
the backend has a tuner (ScaNN, ``engine.index.tuning``): the products index on the scene crops'
embeddings (the real queries: a crop searched for its product), the scenes index on a sample of its
own vectors. A backend that measures its own recall instead (Milvus, a collection per index:
``<collection>_products``, ``<collection>_scenes``) measures it on the same queries.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.index.backends import BackendSpec
from engine.index.tuning import TuningConfig
from engine.data.catalog import Catalog, ProductImage
from engine.config import Preprocessing
from engine.model.embedder import Embedder, read_ahead
from engine.files import atomic_file, file_sha256
from engine.data.images import load_square, query_crop
from engine.index.catalog_index import CatalogIndex, Item
from engine.index.views import ProductViews, fuse_views, view_crops
from engine.data.proposals import WINDOW, Detect, catalog_proposals, windows

logger = logging.getLogger(__name__)

PRODUCTS, SCENES = "products", "scenes"
# catalog photo files -> float32 (N, D) in their order, computed elsewhere (engine.index.ray_runner); None: in process
EmbedPhotos = Callable[[Sequence[Path]], np.ndarray]


class PhotoRunner(Protocol):
    """Embeds catalog photos and scene crops outside this process, e.g. on Ray (``engine.index.ray_runner.RayRunner``)."""

    def embed_photos(self, paths: Sequence[Path], model_path: Path) -> np.ndarray:
        """``paths`` embedded by the saved embedder at ``model_path`` → ``float32 (N, D)`` in their order."""
        ...

    def embed_scenes(self, catalog: Catalog, model_path: Path, open_detect: Callable[[], Detect] | None,
                     classes: Collection[str] | None) -> tuple[np.ndarray, list[Item]]:
        """``scene_rows`` of ``catalog`` computed by the runner's workers, each opening its own detector
        with ``open_detect`` (a picklable factory; None: no detector), in ``scenes.csv`` order."""
        ...

    def describe(self) -> dict:
        """What the index manifest records about the runner (``embedded_by``)."""
        ...


def product_images(products: Sequence[ProductImage], prep: Preprocessing) -> Iterator[np.ndarray]:
    """The product photos as the model sees them, ``uint8 (size, size, 3)`` each, in order, decoded on a
    read-ahead thread (at most 128 waiting) while the model embeds the previous batch."""
    return photo_images([p.image for p in products], prep)


def photo_images(paths: Sequence[Path], prep: Preprocessing) -> Iterator[np.ndarray]:
    """Catalog photo files as the model sees them (see ``product_images``): what every runner embeds."""
    reduced = prep.catalog_decode == "reduced"
    return read_ahead(load_square(path, prep.image_size, reduced=reduced) for path in paths)


def product_index(catalog: Catalog, embedder: Embedder, backend: BackendSpec = BackendSpec(), tuning: TuningConfig | None = None,
                  queries: np.ndarray | None = None, embed_photos: EmbedPhotos | None = None,
                  views: ProductViews | None = None) -> CatalogIndex:
    """One item per product image of ``products.csv``, indexed by ``backend``; tuned on ``queries``
    (float32 (Q, D)) when given. The photos are embedded by ``embed_photos`` (a distributed runner,
    with ``embedder``'s model and preprocessing) when given, else in this process. ``views``: in-room
    views of the products, embedded in this process as room crops and blended into their photos'
    vectors (``engine.index.views``); the index records them under ``embedded_by["views"]``."""
    items = [Item(f"{p.product_id}#{i}", p.product_id, p.name, p.type, _relative(p.image, catalog.root), details=p.details)
             for i, p in enumerate(catalog.products)]
    if embed_photos is not None:
        vectors = np.asarray(embed_photos([p.image for p in catalog.products]), np.float32)
    else:
        vectors = embedder(product_images(catalog.products, embedder.preprocessing))
    if views is not None:
        views = views.for_products(catalog.product_ids)
        prep = embedder.preprocessing
        view_vectors = embedder(read_ahead(view_crops(views.views, prep.image_size, prep.crop_padding)))
        vectors = fuse_views(vectors, [p.product_id for p in catalog.products], view_vectors, [v.product_id for v in views.views], views.weight)
        logger.info("%d in-room views of %d products blended into their photos' vectors (weight %g)", len(views.views),
                    len({v.product_id for v in views.views}), views.weight)
    index = CatalogIndex.from_vectors(vectors, items, embedder.fingerprint, backend, asdict(embedder.preprocessing), str(catalog.root), tuning,
                                      queries, "scene-crop embeddings")
    index.photo_hashes = [p.sha256 or file_sha256(p.image) for p in catalog.products]  # what a later delta reuses vectors by
    return index


def scene_rows(catalog: Catalog, embedder: Embedder, detect: Detect | None,
               classes: Collection[str] | None = None) -> tuple[np.ndarray, list[Item]]:
    """The embeddings float32 (N, D) and items of every proposed crop of each scene (``engine.data.proposals``:
    pairs.csv boxes, confident detections, missing ``classes`` filled in, else the whole scene);
    unreadable scenes are skipped."""
    items, crops = scene_crops(catalog, embedder.preprocessing, detect, classes)
    return embedder(iter(crops)), items


def scene_crops(catalog: Catalog, prep: Preprocessing, detect: Detect | None,
                classes: Collection[str] | None = None) -> tuple[list[Item], list[np.ndarray]]:
    """The items and ``uint8 (S, S, 3)`` crops of every proposed crop of each scene, then of its 14
    fixed windows (``engine.data.proposals.windows``: label ``WINDOW``, type '', of no product group),
    in ``scenes.csv`` order (see ``scene_rows``); what every runner embeds. The windows let "where is
    it used?" find a product no proposed crop holds (``SearchEngine.scenes_of``: after the rooms with
    a crop of its group; on IKEA's development folds with the COCO detector p2s R@10 +0.07)."""
    items, crops = [], []
    for proposal in catalog_proposals(catalog, detect, prep, classes):
        if proposal.image is None:
            continue
        scene = proposal.scene
        image = _relative(scene.image, catalog.root)
        for j, c in enumerate(proposal.crops):
            label = "pairs.csv" if c.source == "pairs.csv" else c.label
            items.append(Item(f"{scene.scene}#{j}", "", scene.scene, c.label, image, scene.scene, c.box, label, room_type=scene.room_type))
            crops.append(query_crop(proposal.image, c.box, prep.image_size, prep.crop_padding))
        h, w = proposal.image.shape[:2]
        for j, box in enumerate(windows(w, h)):
            items.append(Item(f"{scene.scene}#w{j}", "", scene.scene, "", image, scene.scene, box, WINDOW, room_type=scene.room_type))
            crops.append(query_crop(proposal.image, box, prep.image_size, prep.crop_padding))
    return items, crops


def scene_index(catalog: Catalog, embedder: Embedder, detect: Detect | None, backend: BackendSpec = BackendSpec(),
                classes: Collection[str] | None = None, tuning: TuningConfig | None = None) -> CatalogIndex:
    """One item per proposed crop of each scene (see ``scene_rows``), indexed by ``backend``."""
    vectors, items = scene_rows(catalog, embedder, detect, classes)
    return CatalogIndex.from_vectors(vectors, items, embedder.fingerprint, backend, asdict(embedder.preprocessing), str(catalog.root), tuning)


def _proposed_crops(scenes: CatalogIndex | None) -> np.ndarray | None:
    """float32 (C, D): the scenes index's proposed crops (its fixed windows left out), the products
    index's real queries; None when it holds none."""
    if scenes is None or not len(scenes):
        return None
    crops = np.array([label != WINDOW for label in scenes.items.column("label")], bool)
    return scenes.vectors[crops] if crops.any() else None


def _relative(image: Path, root: Path) -> str:
    """An image path as the index stores it: relative to the catalog root (POSIX), so the index
    serves on another machine or after the catalog moves; absolute only if outside the root."""
    return image.relative_to(root).as_posix() if image.is_relative_to(root) else str(image)


def build_catalog_indexes(catalog: Catalog, embedder: Embedder, out: Path, detect: Detect | None = None,
                          backend: BackendSpec = BackendSpec(), classes: Collection[str] | None = None,
                          tuning: TuningConfig | None = None, runner: PhotoRunner | None = None, model_path: Path | None = None,
                          open_detect: Callable[[], Detect] | None = None, views: ProductViews | None = None) -> dict[str, CatalogIndex]:
    """Build and save ``out/products`` and ``out/scenes`` with ``backend``; ``embedder`` must be saved (it has a fingerprint).

    The scene crops are embedded first: with ``tuning`` the proposed ones (not the fixed windows) are the products index's tuning queries
    (the scenes index is tuned on a sample of its own vectors), and a backend measuring its own
    recall measures the products index's on them (Milvus, whose vectors go into collections
    ``<collection>_products`` and ``_scenes``). An empty scenes index gets the default backend
    (exact search: nothing to store elsewhere). With ``runner``, the product photos and the scene
    crops are embedded on it with the embedder saved at ``model_path``, its workers detecting with their own
    detector from ``open_detect`` (None: no detector; ``detect`` is not used there); each manifest
    records which runner computed its vectors (``embedded_by``); ``views`` are blended into the
    products' vectors (``product_index``) and recorded there too."""
    if not embedder.fingerprint:
        raise ValueError("indexes need a saved embedder (its fingerprint ties them to it); load it with Embedder.load")
    if runner is not None and model_path is None:
        raise ValueError("a runner embeds with the saved model file: pass model_path (the .keras file embedder was loaded from)")
    if runner is not None and detect is not None and open_detect is None:
        raise ValueError("a runner's workers open their own detector: pass open_detect (a picklable factory of detect)")
    embed_photos = None if runner is None else partial(runner.embed_photos, model_path=Path(model_path))
    scenes = None
    if catalog.scenes:
        if runner is None:
            vectors, items = scene_rows(catalog, embedder, detect, classes)
        else:
            vectors, items = runner.embed_scenes(catalog, Path(model_path), open_detect, classes)
        scenes = CatalogIndex.from_vectors(vectors, items, embedder.fingerprint, backend.named(SCENES) if len(items) else BackendSpec(),
                                           asdict(embedder.preprocessing), str(catalog.root), tuning)
    queries = _proposed_crops(scenes)
    built = {PRODUCTS: product_index(catalog, embedder, backend.named(PRODUCTS), tuning, queries, embed_photos, views)}
    embedded_by = {"runner": "local"} if runner is None else runner.describe()
    built[PRODUCTS].embedded_by = {**embedded_by, **({"views": views.for_products(catalog.product_ids).record()} if views else {})}
    if scenes is not None:
        built[SCENES] = scenes
        scenes.embedded_by = dict(embedded_by)  # the scene crops are never blended
    for name, index in built.items():
        index.save(Path(out) / name)
        t = index.tuning
        logger.info("%s index: %d items (%s%s) -> %s", name, len(index), index.index.kind,
                    f": {t['reason']}" if t else "", Path(out) / name)
    return built


def build_serving_folder(model_path: Path, catalog: Catalog, out: Path, detect: Detect | None = None,
                         backend: BackendSpec = BackendSpec(), classes: Collection[str] | None = None,
                         tuning: TuningConfig | None = TuningConfig(), runner: PhotoRunner | None = None,
                         open_detect: Callable[[], Detect] | None = None, views: ProductViews | None = None) -> dict[str, CatalogIndex]:
    """Everything the search service needs in ``out``: ``model.keras`` (a copy of ``model_path``)
    and the ``products`` and ``scenes`` indexes built with it by ``backend`` (their vectors computed
    on ``runner`` with detectors from ``open_detect`` when given; ``views`` blended into the products')."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "model.keras") as tmp:
        shutil.copyfile(model_path, tmp)
    return build_catalog_indexes(catalog, Embedder.load(out / "model.keras"), out, detect, backend, classes, tuning, runner,
                                 out / "model.keras", open_detect, views)

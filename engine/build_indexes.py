"""Build the two search indexes of a catalog with a trained embedder: products and scene crops.

With a ``TuningConfig`` each index is tuned to its recall target (``engine.ann_tuning``): the
products index on the scene crops' embeddings (the real queries: a crop searched for its product),
the scenes index on a sample of its own vectors.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from engine.ann import ScannParams
from engine.ann_tuning import TuningConfig
from engine.catalog import Catalog, ProductImage
from engine.config import Preprocessing
from engine.embed import Embedder, read_ahead
from engine.files import atomic_file
from engine.images import load_square, query_crop
from engine.index_folder import CatalogIndex, Item
from engine.proposals import Detect, catalog_proposals

logger = logging.getLogger(__name__)

PRODUCTS, SCENES = "products", "scenes"


def product_images(products: Sequence[ProductImage], prep: Preprocessing) -> Iterator[np.ndarray]:
    """The product photos as the model sees them, ``uint8 (size, size, 3)`` each, in order, decoded on a
    read-ahead thread (at most 128 waiting) while the model embeds the previous batch."""
    reduced = prep.catalog_decode == "reduced"
    return read_ahead(load_square(p.image, prep.image_size, reduced=reduced) for p in products)


def product_index(catalog: Catalog, embedder: Embedder, params: ScannParams = ScannParams(), tuning: TuningConfig | None = None,
                  queries: np.ndarray | None = None) -> CatalogIndex:
    """One item per product image of ``products.csv``; tuned on ``queries`` (float32 (Q, D)) when given."""
    items = [Item(f"{p.product_id}#{i}", p.product_id, p.name, p.type, _relative(p.image, catalog.root), details=p.details)
             for i, p in enumerate(catalog.products)]
    vectors = embedder(product_images(catalog.products, embedder.preprocessing))
    return CatalogIndex.build(vectors, items, embedder.fingerprint, params, asdict(embedder.preprocessing), str(catalog.root), tuning, queries,
                              "scene-crop embeddings")


def scene_rows(catalog: Catalog, embedder: Embedder, detect: Detect | None,
               classes: Collection[str] | None = None) -> tuple[np.ndarray, list[Item]]:
    """The embeddings float32 (N, D) and items of every proposed crop of each scene (``engine.proposals``:
    pairs.csv boxes, confident detections, missing ``classes`` filled in, else the whole scene);
    unreadable scenes are skipped."""
    prep = embedder.preprocessing
    items, crops = [], []
    for proposal in catalog_proposals(catalog, detect, prep, classes):
        if proposal.image is None:
            continue
        scene = proposal.scene
        for j, c in enumerate(proposal.crops):
            label = "pairs.csv" if c.source == "pairs.csv" else c.label
            items.append(Item(f"{scene.scene}#{j}", "", scene.scene, c.label, _relative(scene.image, catalog.root), scene.scene, c.box,
                              label, room_type=scene.room_type))
            crops.append(query_crop(proposal.image, c.box, prep.image_size, prep.crop_padding))
    return embedder(iter(crops)), items


def scene_index(catalog: Catalog, embedder: Embedder, detect: Detect | None, params: ScannParams = ScannParams(),
                classes: Collection[str] | None = None, tuning: TuningConfig | None = None) -> CatalogIndex:
    """One item per proposed crop of each scene (see ``scene_rows``)."""
    vectors, items = scene_rows(catalog, embedder, detect, classes)
    return CatalogIndex.build(vectors, items, embedder.fingerprint, params, asdict(embedder.preprocessing), str(catalog.root), tuning)


def _relative(image: Path, root: Path) -> str:
    """An image path as the index stores it: relative to the catalog root (POSIX), so the index
    serves on another machine or after the catalog moves; absolute only if outside the root."""
    return image.relative_to(root).as_posix() if image.is_relative_to(root) else str(image)


def build_catalog_indexes(catalog: Catalog, embedder: Embedder, out: Path, detect: Detect | None = None,
                          params: ScannParams = ScannParams(), classes: Collection[str] | None = None,
                          tuning: TuningConfig | None = None) -> dict[str, CatalogIndex]:
    """Build and save ``out/products`` and ``out/scenes``; ``embedder`` must be saved (it has a fingerprint).

    With ``tuning``, the scene crops are embedded first and serve as the products index's tuning
    queries; the scenes index is tuned on a sample of its own vectors."""
    if not embedder.fingerprint:
        raise ValueError("indexes need a saved embedder (its fingerprint ties them to it); load it with Embedder.load")
    scenes = None
    if catalog.scenes:
        vectors, items = scene_rows(catalog, embedder, detect, classes)
        scenes = CatalogIndex.build(vectors, items, embedder.fingerprint, params, asdict(embedder.preprocessing), str(catalog.root), tuning)
    queries = scenes.vectors if scenes is not None and len(scenes) else None
    built = {PRODUCTS: product_index(catalog, embedder, params, tuning, queries)}
    if scenes is not None:
        built[SCENES] = scenes
    for name, index in built.items():
        index.save(Path(out) / name)
        t = index.tuning
        logger.info("%s index: %d items (%s%s) -> %s", name, len(index), index.index.kind,
                    f": {t['reason']}" if t else "", Path(out) / name)
    return built


def build_serving_folder(model_path: Path, catalog: Catalog, out: Path, detect: Detect | None = None,
                         params: ScannParams = ScannParams(), classes: Collection[str] | None = None,
                         tuning: TuningConfig | None = TuningConfig()) -> dict[str, CatalogIndex]:
    """Everything the search service needs in ``out``: ``model.keras`` (a copy of ``model_path``)
    and the ``products`` and ``scenes`` indexes built with it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "model.keras") as tmp:
        shutil.copyfile(model_path, tmp)
    return build_catalog_indexes(catalog, Embedder.load(out / "model.keras"), out, detect, params, classes, tuning)

"""Build the two search indexes of a catalog with a trained embedder: products and scene crops."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path

from engine.ann import ScannParams
from engine.catalog import Catalog
from engine.embed import Embedder
from engine.files import atomic_file
from engine.images import load_image, query_crop, to_square
from engine.index_folder import CatalogIndex, Item
from engine.proposals import Detect, catalog_proposals

logger = logging.getLogger(__name__)

PRODUCTS, SCENES = "products", "scenes"


def product_index(catalog: Catalog, embedder: Embedder, params: ScannParams = ScannParams()) -> CatalogIndex:
    """One item per product image of ``products.csv``."""
    size = embedder.size
    items = [Item(f"{p.product_id}#{i}", p.product_id, p.name, p.type, _relative(p.image, catalog.root), details=p.details)
             for i, p in enumerate(catalog.products)]
    vectors = embedder(to_square(load_image(p.image), size) for p in catalog.products)
    return CatalogIndex.build(vectors, items, embedder.fingerprint, params, asdict(embedder.preprocessing), str(catalog.root))


def scene_index(catalog: Catalog, embedder: Embedder, detect: Detect | None, params: ScannParams = ScannParams(),
                classes: Collection[str] | None = None) -> CatalogIndex:
    """One item per proposed crop of each scene (``engine.proposals``: pairs.csv boxes, confident
    detections, missing ``classes`` filled in, else the whole scene); unreadable scenes are skipped."""
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
    return CatalogIndex.build(embedder(iter(crops)), items, embedder.fingerprint, params, asdict(prep), str(catalog.root))


def _relative(image: Path, root: Path) -> str:
    """An image path as the index stores it: relative to the catalog root (POSIX), so the index
    serves on another machine or after the catalog moves; absolute only if outside the root."""
    return image.relative_to(root).as_posix() if image.is_relative_to(root) else str(image)


def build_catalog_indexes(catalog: Catalog, embedder: Embedder, out: Path, detect: Detect | None = None,
                          params: ScannParams = ScannParams(), classes: Collection[str] | None = None) -> dict[str, CatalogIndex]:
    """Build and save ``out/products`` and ``out/scenes``; ``embedder`` must be saved (it has a fingerprint)."""
    if not embedder.fingerprint:
        raise ValueError("indexes need a saved embedder (its fingerprint ties them to it); load it with Embedder.load")
    built = {PRODUCTS: product_index(catalog, embedder, params)}
    if catalog.scenes:
        built[SCENES] = scene_index(catalog, embedder, detect, params, classes)
    for name, index in built.items():
        index.save(Path(out) / name)
        logger.info("%s index: %d items (%s) -> %s", name, len(index), index.index.kind, Path(out) / name)
    return built


def build_serving_folder(model_path: Path, catalog: Catalog, out: Path, detect: Detect | None = None,
                         params: ScannParams = ScannParams(), classes: Collection[str] | None = None) -> dict[str, CatalogIndex]:
    """Everything the search service needs in ``out``: ``model.keras`` (a copy of ``model_path``)
    and the ``products`` and ``scenes`` indexes built with it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "model.keras") as tmp:
        shutil.copyfile(model_path, tmp)
    return build_catalog_indexes(catalog, Embedder.load(out / "model.keras"), out, detect, params, classes)

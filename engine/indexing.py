"""Build the two indexes of a catalog with a trained embedder: products and scene crops."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np

from detectors.base import Detector
from engine.catalog import Catalog
from engine.catalog_index import CatalogIndex, Item
from engine.embed import embed_images, input_size
from engine.images import ImageError, load_image, query_crop, to_square
from engine.index import ScannParams

logger = logging.getLogger(__name__)

PRODUCTS, SCENES = "products", "scenes"


def _embed_in_batches(model: keras.Model, images, batch: int = 64) -> np.ndarray:
    parts, buf = [], []
    for im in images:
        buf.append(im)
        if len(buf) == batch:
            parts.append(embed_images(model, np.stack(buf)))
            buf = []
    if buf:
        parts.append(embed_images(model, np.stack(buf)))
    dim = int(model.output_shape[-1])
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def product_index(catalog: Catalog, model: keras.Model, fingerprint: str, params: ScannParams = ScannParams()) -> CatalogIndex:
    """One item per product image of ``products.csv``."""
    size = input_size(model)
    items = [Item(f"{p.product_id}#{i}", p.product_id, p.name, p.type, str(p.image)) for i, p in enumerate(catalog.products)]
    vectors = _embed_in_batches(model, (to_square(load_image(p.image), size) for p in catalog.products))
    return CatalogIndex.build(vectors, items, fingerprint, params)


def scene_index(catalog: Catalog, model: keras.Model, detector: Detector | None, fingerprint: str, *,
                padding: float = 0.0625, min_confidence: float = 0.3, params: ScannParams = ScannParams()) -> CatalogIndex:
    """One item per detected object in each scene (and per pairs.csv box); the whole scene without a detector."""
    size = input_size(model)
    types = catalog.types
    boxes_of: dict[str, list] = {}
    for pair in catalog.pairs:
        if pair.box is not None:
            boxes_of.setdefault(pair.scene, []).append((pair.box, types[pair.product_id], "pairs.csv"))
    items, crops = [], []
    for scene in catalog.scenes:
        try:
            image = load_image(scene.image)
        except ImageError as exc:
            logger.warning("scene index skips %s: %s", scene.scene, exc)
            continue
        found = list(boxes_of.get(scene.scene, []))
        if detector is not None:
            found += [(d.box, d.label, d.label) for d in detector.detect(image) if d.confidence >= min_confidence]
        if not found:
            found = [(None, "scene", "scene")]
        for j, (box, kind, label) in enumerate(found):
            items.append(Item(f"{scene.scene}#{j}", "", scene.scene, kind, str(scene.image), scene.scene, box, label))
            crops.append(query_crop(image, box, size, padding))
    vectors = _embed_in_batches(model, crops)
    return CatalogIndex.build(vectors, items, fingerprint, params)


def build_catalog_indexes(catalog: Catalog, model: keras.Model, fingerprint: str, out: Path, detector: Detector | None = None,
                          params: ScannParams = ScannParams()) -> dict[str, CatalogIndex]:
    """Build and save ``out/products`` and ``out/scenes``."""
    built = {PRODUCTS: product_index(catalog, model, fingerprint, params)}
    if catalog.scenes:
        built[SCENES] = scene_index(catalog, model, detector, fingerprint, params=params)
    for name, index in built.items():
        index.save(Path(out) / name)
        logger.info("%s index: %d items (%s) -> %s", name, len(index), index.index.kind, Path(out) / name)
    return built

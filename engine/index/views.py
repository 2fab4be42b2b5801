"""A catalog photo's vector blended with its product's in-room views.

A shop's photo shows a product alone on white; a shopper's crop shows it in a room, lit by the
room, beside other things. The synthetic in-room views of a product (``training.synthesize``:
its photo cut out and pasted into room photos) sit between the two, and they need no training and
no room photo of the product: a product added tomorrow gets views the same way. Here each photo's
vector is moved toward the mean of its product's views:

    v' = |v| * (v + w * mean(views)) / |v + w * mean(views)|

so the index keeps one vector per photo, of the photo's norm (a unit embedding stays unit), and a
product without views keeps its photo's vector unchanged. Indexing the views as photos of their
own (the product's distance the nearest of them) was measured worse on the development folds:
a pasted view carries its background, and such vectors come near many rooms' crops
(docs/evaluation.md). ``w`` was chosen on development folds, never on the hold-out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.images import Box, load_image, query_crop

DEFAULT_WEIGHT = 0.25  # IKEA's development folds (docs/evaluation.md): 0.25, 0.5 and 1 measured


@dataclass(frozen=True)
class ProductView:
    """One in-room view of a catalog product: the picture, the product's box in it (pixels), and the
    room photo it was pasted into ('' when not known)."""

    product_id: str
    image: Path
    box: Box
    background: str = ""


@dataclass(frozen=True)
class ProductViews:
    """The in-room views blended into the catalog's vectors, and what the index records of them.

    ``source``: where they came from (e.g. the synthetic manifest's path); ``digest``: a hash of
    that file, so an index says exactly which views made it; ``weight``: ``w`` above, > 0."""

    views: tuple[ProductView, ...]
    weight: float = DEFAULT_WEIGHT
    source: str = ""
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.weight > 0 or not np.isfinite(self.weight):
            raise ValueError(f"the views' weight must be a positive number, got {self.weight}")
        if not self.views:
            raise ValueError(f"no views in {self.source or 'the given list'}: nothing to blend")

    def for_products(self, product_ids: Iterable[str]) -> ProductViews:
        """Only the views of ``product_ids`` (others' views are never embedded); the same record."""
        keep = set(product_ids)
        return ProductViews(tuple(v for v in self.views if v.product_id in keep), self.weight, self.source, self.digest)

    def outside(self, scenes: Collection[str]) -> ProductViews | None:
        """Only the views not pasted into ``scenes`` (held-out or evaluated rooms: a view would carry
        that room into the index); None when none is left."""
        kept = tuple(v for v in self.views if v.background not in scenes)
        return ProductViews(kept, self.weight, self.source, self.digest) if kept else None

    def record(self) -> dict:
        """What an index manifest or an evaluation report keeps of them."""
        return {"views": len(self.views), "products": len({v.product_id for v in self.views}), "weight": self.weight,
                "source": self.source, "sha256": self.digest}


def view_crops(views: Sequence[ProductView], size: int, padding: float) -> Iterator[np.ndarray]:
    """Each view as the model sees a room crop: its box padded and squared, uint8 ``(size, size, 3)``,
    in order, decoded one at a time."""
    for view in views:
        yield query_crop(load_image(view.image), view.box, size, padding)


def fuse_views(vectors: np.ndarray, products: Sequence[str], view_vectors: np.ndarray, view_products: Sequence[str],
               weight: float = DEFAULT_WEIGHT) -> np.ndarray:
    """Photo vectors float (N, D) of ``products`` (N,) blended with their product's views float
    (V, D) of ``view_products`` (V,) → float32 (N, D), each row of its photo's norm. A product with
    several photos: each is blended with the same mean; with no view: returned as it was."""
    vectors = np.asarray(vectors, np.float32)
    view_vectors = np.asarray(view_vectors, np.float32)
    if vectors.ndim != 2 or len(products) != len(vectors):
        raise ValueError(f"vectors must be (N, D) with one product id a row, got {vectors.shape} and {len(products)} ids")
    if view_vectors.ndim != 2 or len(view_products) != len(view_vectors):
        raise ValueError(f"view vectors must be (V, D) with one product id a row, got {view_vectors.shape} and {len(view_products)} ids")
    if len(view_vectors) and view_vectors.shape[1] != vectors.shape[1]:
        raise ValueError(f"view vectors have D={view_vectors.shape[1]}, the photos D={vectors.shape[1]}: not one embedder's")
    if not weight > 0:
        raise ValueError(f"weight must be > 0, got {weight}")
    ids = {p: j for j, p in enumerate(dict.fromkeys(view_products))}
    of_view = np.array([ids[p] for p in view_products], np.int64)
    means = np.zeros((len(ids), vectors.shape[1]), np.float64)
    np.add.at(means, of_view, view_vectors)
    means /= np.maximum(np.bincount(of_view, minlength=len(ids)), 1)[:, None]
    rows = np.array([i for i, p in enumerate(products) if p in ids], np.int64)  # photos of products with views
    out = vectors.copy()
    if len(rows):
        blend = vectors[rows] + weight * means[[ids[products[i]] for i in rows]]
        norm = np.linalg.norm(blend, axis=1, keepdims=True)
        scaled = blend * (np.linalg.norm(vectors[rows], axis=1, keepdims=True) / np.where(norm > 0, norm, 1.0))
        out[rows] = np.where(norm > 0, scaled, vectors[rows])
    return out

"""The versioned triplet manifest written by mining and read by ``training.fit --triplets``.

A manifest is JSON::

    {"format": "showroom.triplets", "version": 1, "catalog": ..., "catalog_fingerprint": ...,
     "created": ..., "producer": {...}, "stats": {...},
     "positives": [{"product_id", "type", "scene" (or null), "image" (relative to the catalog
                    when inside it), "box" [x1, y1, x2, y2] or null, "source", "label",
                    "confidence", "similarity", "negatives": [product ids],
                    "negative_kinds": ["in_class" | "out_class" | "hard", ...]}, ...]}

``source`` is ``catalog_box`` (pairs.csv had a box), ``detector`` (mined crop) or
``product_lifestyle`` (a product image judged not iconic, used as an extra query).
Files are written atomically (temp file, then rename).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.files import write_json_atomic

if TYPE_CHECKING:
    from engine.data.catalog import Catalog

FORMAT = "showroom.triplets"
VERSION = 1


class ManifestError(ValueError):
    """A triplet manifest that cannot be read or does not fit the catalog."""


@dataclass(frozen=True)
class Positive:
    """One query of a product: a box in a scene (or a whole image) and the negatives to pair it with."""

    product_id: str
    type: str
    scene: str | None
    image: str
    box: tuple[int, int, int, int] | None
    source: str
    label: str = ""
    confidence: float = 0.0
    similarity: float = 0.0
    negatives: tuple[str, ...] = ()
    negative_kinds: tuple[str, ...] = ()


@dataclass
class Manifest:
    catalog: str
    catalog_fingerprint: str
    positives: list[Positive]
    producer: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    @property
    def holdout_scenes(self) -> tuple[str, ...]:
        """Scenes held out when this manifest (or the one it was refreshed from) was mined."""
        producer, names = self.producer, set()
        while isinstance(producer, dict):
            names.update(producer.get("holdout_scenes") or ())
            producer = producer.get("parent")
        return tuple(sorted(names))

    @property
    def holdout_products(self) -> tuple[str, ...]:
        """Products held out (the new-products protocol) when this manifest or one it was refreshed
        from was made: no positive of theirs, and none named as a negative."""
        producer, names = self.producer, set()
        while isinstance(producer, dict):
            names.update(producer.get("holdout_products") or ())
            producer = producer.get("parent")
        return tuple(sorted(names))

    def image_path(self, pos: Positive) -> Path:
        p = Path(pos.image)
        return p if p.is_absolute() else Path(self.catalog) / p


def save_manifest(manifest: Manifest, path: Path) -> None:
    data = {
        "format": FORMAT, "version": VERSION, "catalog": manifest.catalog,
        "catalog_fingerprint": manifest.catalog_fingerprint, "created": manifest.created,
        "producer": manifest.producer, "stats": manifest.stats,
        "positives": [asdict(p) for p in manifest.positives],
    }
    write_json_atomic(path, data)


def check_fits(catalog: Catalog, fingerprint: str, product_ids: Iterable[str], error: type[ValueError], made: str, fix: str) -> None:
    """Raise ``error`` when a manifest was made from another catalog than ``catalog`` (its
    ``fingerprint``) or names products it lacks; ``made`` opens the message, ``fix`` ends it."""
    if fingerprint != catalog.fingerprint:
        raise error(f"{made} catalog fingerprint {fingerprint}, but {catalog.root} is {catalog.fingerprint}; {fix}")
    unknown = sorted(set(product_ids) - set(catalog.types))
    if unknown:
        raise error(f"{made} a catalog with products missing from {catalog.root}: {unknown[:5]}; {fix}")


def read_versioned_json(path: Path, fmt: str, version: int, error: type[ValueError], what: str, make: str) -> dict[str, Any]:
    """The JSON object at ``path`` whose ``format``/``version`` are ``fmt``/``version``; else
    ``error`` naming ``what`` it should be and the command that ``make``s one."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} not found; write one with {make}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON ({exc}); write it again with {make}") from None
    if not isinstance(data, dict) or data.get("format") != fmt or data.get("version") != version:
        found = (data.get("format"), data.get("version")) if isinstance(data, dict) else (type(data).__name__, None)
        raise error(f"{path} is not a {fmt} v{version} {what} (format={found[0]!r}, version={found[1]!r}); write it again with {make}")
    return data


def load_manifest(path: Path) -> Manifest:
    path = Path(path)
    data = read_versioned_json(path, FORMAT, VERSION, ManifestError, "triplet manifest", "python -m training.mine_triplets")
    positives = []
    for i, p in enumerate(data["positives"]):
        try:
            positives.append(Positive(**{**p, "box": tuple(p["box"]) if p.get("box") else None,
                                        "negatives": tuple(p.get("negatives", ())), "negative_kinds": tuple(p.get("negative_kinds", ()))}))
        except TypeError as exc:
            raise ManifestError(f"{path}: positive {i} is malformed ({exc})") from None
    return Manifest(data["catalog"], data["catalog_fingerprint"], positives, data.get("producer", {}), data.get("stats", {}), data.get("created", ""))


REAL_SOURCES = ("catalog_box", "detector")  # positives cut from room photos (not product photos, not synthetic)


def read_seen_products(path: str | Path) -> list[str]:
    """Product ids "seen in training pairs": a text list (one id per line, ``#`` comments), or the
    products of a triplet manifest's real positives (pairs.csv boxes and mined detections)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"seen-products file {path} cannot be read ({exc})") from None
    if path.suffix == ".json":
        return sorted({p.product_id for p in load_manifest(path).positives if p.source in REAL_SOURCES})
    return sorted({line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")})

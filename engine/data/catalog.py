"""Catalog loading and validation: products.csv, scenes.csv and pairs.csv in one directory.

A catalog directory holds
- ``products.csv``: ``product_id,name,type,...,image``, one row per product image;
- ``scenes.csv`` (optional): ``scene,image[,room_type]``, lifestyle / room photos;
- ``pairs.csv`` (optional): ``product_id,scene[,x1,y1,x2,y2]``, product appears in scene,
  with its box in pixels (x right, y down, x2/y2 exclusive) when known.

Image paths are relative to the directory. Anything malformed raises ``CatalogError`` naming
the file, the CSV line and what to fix, before any training starts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

PRODUCT_COLUMNS = ("product_id", "name", "type", "image")
PRODUCT_REQUIRED = ("product_id", "type", "image")  # a name may be empty
SCENE_COLUMNS = ("scene", "image")
PAIR_COLUMNS = ("product_id", "scene")
BOX_COLUMNS = ("x1", "y1", "x2", "y2")


class CatalogError(ValueError):
    """A catalog file is missing or malformed; the message names the file, row and fix."""


Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ProductImage:
    """One row of products.csv: an (iconic) image of a product."""

    product_id: str
    name: str
    type: str
    image: Path
    row: int
    details: tuple[tuple[str, str], ...] = ()  # the row's other non-empty columns (color, size, desc, price, url ...)
    sha256: str = field(default="", compare=False)  # of the image file's bytes, once checked ("" before)


@dataclass(frozen=True)
class Scene:
    """One row of scenes.csv: a lifestyle / room photo of ``size`` = (width, height) pixels."""

    scene: str
    image: Path
    room_type: str
    size: tuple[int, int]


@dataclass(frozen=True)
class Pair:
    """One row of pairs.csv: product appears in scene, inside ``box`` when known."""

    product_id: str
    scene: str
    box: Box | None
    row: int


@dataclass(frozen=True)
class Catalog:
    """A validated catalog. ``fingerprint`` is a sha256 over the CSVs and every image's bytes."""

    root: Path
    products: tuple[ProductImage, ...]
    scenes: tuple[Scene, ...]
    pairs: tuple[Pair, ...]
    fingerprint: str
    _types: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def product_type(self, product_id: str) -> str:
        """The category of a product."""
        return self._types[product_id]

    @property
    def product_ids(self) -> list[str]:
        """Unique product ids in first-seen order."""
        return list(self._types)

    @property
    def types(self) -> dict[str, str]:
        """product_id -> type."""
        return dict(self._types)

    def images_of(self, product_id: str) -> list[ProductImage]:
        """All product images of one product."""
        return [p for p in self.products if p.product_id == product_id]

    def scene(self, name: str) -> Scene:
        """The scene of that name."""
        for s in self.scenes:
            if s.scene == name:
                return s
        raise KeyError(name)


def _read_csv(path: Path, required: Iterable[str], fix: str) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV as (line number, row); header is line 1."""
    if not path.is_file():
        raise CatalogError(f"{path}: file not found. {fix}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text ({exc}). Save it as UTF-8 CSV.") from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise CatalogError(
            f"{path}, line 1: missing column(s) {', '.join(missing)}; header is {header}. "
            f"Add the column(s): required are {', '.join(required)}."
        )
    rows = []
    for row in reader:
        line = reader.line_num
        if None in row:
            raise CatalogError(f"{path}, line {line}: more fields than the header has columns. Quote fields that contain commas.")
        rows.append((line, {k: (v or "").strip() for k, v in row.items()}))
    return rows


def _require(path: Path, line: int, row: dict[str, str], columns: Iterable[str]) -> None:
    for c in columns:
        if not row.get(c):
            raise CatalogError(f"{path}, line {line}: empty {c!r}. Every row needs a {c}.")


def _resolve_image(root: Path, csv_path: Path, line: int, rel: str) -> Path:
    image = (root / rel).resolve()
    if not image.is_file():
        raise CatalogError(
            f"{csv_path}, line {line}: image {rel!r} not found at {image}. "
            "Image paths are relative to the catalog directory; fix the path or add the file."
        )
    return image


def _check_image(path: Path) -> tuple[str, tuple[int, int] | str]:
    """Hash an image file and decode it cheaply; returns (sha256, (w, h)) or (sha256, error)."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError) as exc:
        return digest, f"{type(exc).__name__}: {exc}"
    return digest, size


def load_catalog(root: str | Path, *, workers: int = 8) -> Catalog:
    """Load and validate a catalog directory.

    Every image is hashed and decoded (at reduced resolution) so that a missing or unreadable
    file fails here, not in the middle of training.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise CatalogError(f"{root}: catalog directory not found. Pass the directory that holds products.csv.")
    products, types = _read_products(root)
    scene_rows = _read_scene_rows(root)
    checks: list[tuple[Path, Path, int]] = [(p.image, root / "products.csv", p.row) for p in products]
    checks += [(img, root / "scenes.csv", line) for line, _, img in scene_rows]
    results = _check_images(checks, workers)
    products = [replace(p, sha256=results[p.image][0]) for p in products]  # each photo hashed once, here
    scenes = [Scene(row["scene"], image, row.get("room_type", ""), results[image][1]) for _, row, image in scene_rows]
    pairs = _read_pairs(root, scenes, types)
    h = hashlib.sha256()
    for name in ("products.csv", "scenes.csv", "pairs.csv"):
        path = root / name
        if path.exists():
            h.update(name.encode() + b"\0" + path.read_bytes())
    for image in sorted(results):
        h.update(str(image.relative_to(root) if image.is_relative_to(root) else image).encode())
        h.update(results[image][0].encode())
    catalog = Catalog(root, tuple(products), tuple(scenes), tuple(pairs), h.hexdigest()[:16], types)
    logger.info(
        "catalog %s: %d product images (%d products, %d types), %d scenes, %d pairs (%d with boxes)",
        root, len(products), len(types), len(set(types.values())), len(scenes), len(pairs),
        sum(p.box is not None for p in pairs),
    )
    return catalog


def _read_products(root: Path) -> tuple[list[ProductImage], dict[str, str]]:
    """The rows of products.csv, and product id → type (one type per product)."""
    products, types = read_product_rows(root / "products.csv", root)
    if not products:
        raise CatalogError(f"{root / 'products.csv'}: no products. Add at least one row.")
    return products, types


def read_product_rows(products_csv: Path, root: Path) -> tuple[list[ProductImage], dict[str, str]]:
    """The rows of a CSV in products.csv's format (image paths relative to the catalog ``root``),
    validated as the catalog's are, and product id → type (one type per product)."""
    rows = _read_csv(products_csv, PRODUCT_COLUMNS, "A products file needs columns product_id,name,type,image.")
    products: list[ProductImage] = []
    types: dict[str, str] = {}
    type_line: dict[str, int] = {}
    for line, row in rows:
        _require(products_csv, line, row, PRODUCT_REQUIRED)
        pid, ptype = row["product_id"], row["type"]
        if pid in types and types[pid] != ptype:
            raise CatalogError(
                f"{products_csv}, line {line}: product {pid!r} has type {ptype!r} but line "
                f"{type_line[pid]} gives it type {types[pid]!r}. A product has one type; fix one of the rows."
            )
        types.setdefault(pid, ptype)
        type_line.setdefault(pid, line)
        image = _resolve_image(root, products_csv, line, row["image"])
        details = tuple((k, v) for k, v in row.items() if k not in PRODUCT_COLUMNS and v)
        products.append(ProductImage(pid, row["name"] or pid, ptype, image, line, details))
    return products, types


def check_product_images(products: Iterable[ProductImage], products_csv: Path, *, workers: int = 8) -> list[ProductImage]:
    """``products`` (rows of ``products_csv``) with each image hashed and decoded as a catalog's are,
    their ``sha256`` filled; ``CatalogError`` naming the row of the first image that cannot be decoded."""
    products = list(products)
    results = _check_images([(p.image, products_csv, p.row) for p in products], workers)
    return [replace(p, sha256=results[p.image][0]) for p in products]


def _read_scene_rows(root: Path) -> list[tuple[int, dict[str, str], Path]]:
    """(line, row, image path) of each scenes.csv row; empty without the file."""
    scenes_csv = root / "scenes.csv"
    if not scenes_csv.exists():
        return []
    out, seen = [], {}
    for line, row in _read_csv(scenes_csv, SCENE_COLUMNS, ""):
        _require(scenes_csv, line, row, SCENE_COLUMNS)
        if row["scene"] in seen:
            raise CatalogError(
                f"{scenes_csv}, line {line}: scene {row['scene']!r} already defined on line "
                f"{seen[row['scene']]}. Scene names must be unique."
            )
        seen[row["scene"]] = line
        out.append((line, row, _resolve_image(root, scenes_csv, line, row["image"])))
    return out


def _check_images(checks: list[tuple[Path, Path, int]], workers: int) -> dict[Path, tuple[str, tuple[int, int]]]:
    """Hash and decode every distinct image once, in parallel (PIL releases the GIL while decoding);
    image → (sha256, (w, h)). The first undecodable one fails naming its CSV and line."""
    unique = sorted({c[0] for c in checks})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(zip(unique, pool.map(_check_image, unique)))
    for image, csv_path, line in checks:
        _, info = results[image]
        if isinstance(info, str):
            raise CatalogError(
                f"{csv_path}, line {line}: image {image} cannot be decoded ({info}). "
                "Replace it with a valid JPEG/PNG or remove the row."
            )
    return results


def _read_pairs(root: Path, scenes: list[Scene], types: dict[str, str]) -> list[Pair]:
    """The rows of pairs.csv (empty without the file), with their boxes when the columns exist."""
    pairs_csv = root / "pairs.csv"
    if not pairs_csv.exists():
        return []
    if not scenes:
        raise CatalogError(f"{pairs_csv}: pairs need scenes, but scenes.csv is missing or empty. Add scenes.csv.")
    scene_by_name = {s.scene: s for s in scenes}
    pair_rows = _read_csv(pairs_csv, PAIR_COLUMNS, "")
    with open(pairs_csv, encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), [])
    present = [c for c in BOX_COLUMNS if c in header]
    if present and len(present) != 4:
        raise CatalogError(f"{pairs_csv}, line 1: box columns must be all of x1,y1,x2,y2 or none; found {present}.")
    pairs = []
    for line, row in pair_rows:
        _require(pairs_csv, line, row, PAIR_COLUMNS)
        pid, sname = row["product_id"], row["scene"]
        if pid not in types:
            raise CatalogError(f"{pairs_csv}, line {line}: unknown product_id {pid!r}. Add it to products.csv or drop the row.")
        if sname not in scene_by_name:
            raise CatalogError(f"{pairs_csv}, line {line}: unknown scene {sname!r}. Add it to scenes.csv or drop the row.")
        box = _parse_box(pairs_csv, line, row, scene_by_name[sname]) if present else None
        pairs.append(Pair(pid, sname, box, line))
    return pairs


def _parse_box(path: Path, line: int, row: dict[str, str], scene: Scene) -> Box | None:
    values = [row.get(c, "") for c in BOX_COLUMNS]
    if not any(values):
        return None
    if not all(values):
        raise CatalogError(f"{path}, line {line}: box is partly empty {values}. Give all of x1,y1,x2,y2 or none.")
    try:
        x1, y1, x2, y2 = (int(round(float(v))) for v in values)
    except ValueError:
        raise CatalogError(f"{path}, line {line}: box {values} is not numeric. Use pixel coordinates.") from None
    w, h = scene.size
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise CatalogError(
            f"{path}, line {line}: box ({x1},{y1},{x2},{y2}) is outside scene {scene.scene!r} of size "
            f"{w}x{h} or empty. Boxes are pixels with 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height."
        )
    return (x1, y1, x2, y2)

"""The generated demo catalog: deterministic, in the catalog format, boxes on the products."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from engine.data.catalog import load_catalog
from engine.data.images import crop, load_image
from training.demo_catalog import DemoSpec, ensure_demo_catalog, generate_demo_catalog


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path):
    spec = DemoSpec(products_per_category=2, scenes=6, seed=11)
    a = generate_demo_catalog(tmp_path / "a", spec)
    b = generate_demo_catalog(tmp_path / "b", spec)
    c = generate_demo_catalog(tmp_path / "c", DemoSpec(products_per_category=2, scenes=6, seed=12))
    assert digest(a) == digest(b) != digest(c)


def test_catalog_is_valid_and_boxes_hold_the_product(tiny_catalog: Path):
    cat = load_catalog(tiny_catalog)
    assert len(set(cat.types.values())) == 6
    assert {p.product_id for p in cat.pairs} == set(cat.product_ids)  # every product appears in a scene
    # The box region differs from the empty room: it has strong edges (an object), unlike a sliver of wall.
    pair = cat.pairs[0]
    scene = load_image(cat.scene(pair.scene).image)
    region = crop(scene, pair.box).astype(np.float32)
    assert region.shape[0] >= 20 and region.shape[1] >= 10
    assert region.std() > 10


def test_ensure_generates_once(tmp_path: Path):
    spec = DemoSpec(products_per_category=2, scenes=5, seed=1)
    first = ensure_demo_catalog(tmp_path, spec)
    stamp = (first / "pairs.csv").stat().st_mtime_ns
    again = ensure_demo_catalog(tmp_path, spec)
    assert again == first and (again / "pairs.csv").stat().st_mtime_ns == stamp

"""Catalog loading: a valid catalog loads; each kind of malformed catalog fails with file, line and fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.data.catalog import CatalogError, load_catalog


@pytest.fixture()
def catalog_copy(tiny_catalog: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cat"
    shutil.copytree(tiny_catalog, dst)
    return dst


def rewrite(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def test_valid_catalog_loads(tiny_catalog: Path):
    cat = load_catalog(tiny_catalog)
    assert len(cat.products) == 18 and len(set(cat.types.values())) == 6
    assert len(cat.scenes) == 16
    assert cat.pairs and all(p.box is not None for p in cat.pairs)
    for p in cat.pairs:
        w, h = cat.scene(p.scene).size
        x1, y1, x2, y2 = p.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert load_catalog(tiny_catalog).fingerprint == cat.fingerprint


def test_fingerprint_changes_with_image_bytes(catalog_copy: Path):
    before = load_catalog(catalog_copy).fingerprint
    img = next((catalog_copy / "images" / "products").glob("*.png"))
    from PIL import Image

    Image.new("RGB", (64, 64), (1, 2, 3)).save(img)
    assert load_catalog(catalog_copy).fingerprint != before


def test_missing_column(catalog_copy: Path):
    rewrite(catalog_copy / "products.csv", "product_id,name,type", "product_id,name,kind")
    with pytest.raises(CatalogError, match=r"products\.csv, line 1: missing column\(s\) type"):
        load_catalog(catalog_copy)


def test_missing_image_file(catalog_copy: Path):
    img = sorted((catalog_copy / "images" / "products").glob("*.png"))[1]
    img.unlink()
    with pytest.raises(CatalogError, match=r"products\.csv, line 3: image .* not found"):
        load_catalog(catalog_copy)


def test_unreadable_image(catalog_copy: Path):
    scene = catalog_copy / "images" / "scenes" / "scene0002.jpg"
    scene.write_bytes(scene.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(CatalogError, match=r"scenes\.csv, line 4: image .* cannot be decoded"):
        load_catalog(catalog_copy)


def test_not_an_image(catalog_copy: Path):
    img = sorted((catalog_copy / "images" / "products").glob("*.png"))[0]
    img.write_text("hello")
    with pytest.raises(CatalogError, match=r"products\.csv, line 2: .*cannot be decoded.*Replace it"):
        load_catalog(catalog_copy)


def test_duplicate_id_with_conflicting_type(catalog_copy: Path):
    path = catalog_copy / "products.csv"
    lines = path.read_text().splitlines()
    first = lines[1].split(",")
    dup = [first[0], "dup", "Sofa" if first[2] != "Sofa" else "Chair"] + first[3:]
    path.write_text("\n".join(lines + [",".join(dup)]) + "\n")
    with pytest.raises(CatalogError, match=rf"line {len(lines) + 1}: product '{first[0]}' has type .* but line 2"):
        load_catalog(catalog_copy)


def test_duplicate_id_same_type_is_a_second_image(catalog_copy: Path):
    path = catalog_copy / "products.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[1]]) + "\n")
    cat = load_catalog(catalog_copy)
    assert len(cat.images_of(lines[1].split(",")[0])) == 2


def test_box_outside_image(catalog_copy: Path):
    path = catalog_copy / "pairs.csv"
    lines = path.read_text().splitlines()
    parts = lines[1].split(",")
    parts[4] = "5000"
    lines[1] = ",".join(parts)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CatalogError, match=r"pairs\.csv, line 2: box .* is outside scene .* of size 320x240"):
        load_catalog(catalog_copy)


def test_unknown_product_in_pairs(catalog_copy: Path):
    path = catalog_copy / "pairs.csv"
    lines = path.read_text().splitlines()
    lines.append("nope," + lines[1].split(",", 1)[1])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CatalogError, match=rf"line {len(lines)}: unknown product_id 'nope'"):
        load_catalog(catalog_copy)


def test_missing_products_csv(tmp_path: Path):
    with pytest.raises(CatalogError, match="products.csv: file not found"):
        load_catalog(tmp_path)


def test_pairs_without_boxes_are_allowed(catalog_copy: Path):
    path = catalog_copy / "pairs.csv"
    rows = [line.split(",")[:2] for line in path.read_text().splitlines()]
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    cat = load_catalog(catalog_copy)
    assert cat.pairs and all(p.box is None for p in cat.pairs)


def test_ikea_catalog_loads(ikea_catalog: Path):
    cat = load_catalog(ikea_catalog)
    assert len(cat.products) == 2292 and len(cat.scenes) == 153 and len(cat.pairs) == 1775
    assert all(p.box is None for p in cat.pairs)


def test_new_products_are_a_seeded_type_stratified_share_and_restricting_removes_them(tiny_catalog: Path, tmp_path: Path):
    from engine.data.splits import new_products, read_product_list, restrict_products, write_scene_list

    catalog = load_catalog(tiny_catalog)
    ids = new_products(catalog, 0.34, seed=0)
    n_types = len(set(catalog.types.values()))
    per_type = len(catalog.types) // n_types  # the tiny catalog has as many products of every type
    assert len(ids) == round(0.34 * len(catalog.types)) and len(set(ids)) == len(ids)
    assert all(sum(catalog.types[p] == t for p in ids) == round(0.34 * per_type) for t in set(catalog.types.values()))
    assert new_products(catalog, 0.34, seed=0) == ids and new_products(catalog, 0.34, seed=1) != ids
    cut = restrict_products(catalog, ids)
    assert not set(cut.types) & set(ids) and len(cut.types) == len(catalog.types) - len(ids)
    assert not {p.product_id for p in cut.products} & set(ids) and not {p.product_id for p in cut.pairs} & set(ids)
    assert cut.scenes == catalog.scenes and cut.fingerprint == catalog.fingerprint
    assert read_product_list(write_scene_list(ids, tmp_path / "new.txt", "a comment")) == tuple(sorted(ids))
    with pytest.raises(CatalogError, match="leaves"):
        restrict_products(catalog, catalog.types)
    with pytest.raises(CatalogError, match="names no products"):
        read_product_list(write_scene_list([], tmp_path / "empty.txt", "only a comment"))
    with pytest.raises(ValueError, match="fraction"):
        new_products(catalog, 1.0, seed=0)


def test_each_product_photo_is_hashed_once_when_the_catalog_is_checked(tiny_catalog: Path, tmp_path: Path):
    from engine.data.catalog import check_product_images, read_product_rows
    from engine.files import file_sha256

    catalog = load_catalog(tiny_catalog)
    assert all(p.sha256 == file_sha256(p.image) for p in catalog.products)
    rows, _ = read_product_rows(tiny_catalog / "products.csv", tiny_catalog)
    assert {p.sha256 for p in rows} == {""} and check_product_images(rows, tiny_catalog / "products.csv") == list(catalog.products)
    assert [p.sha256 for p in check_product_images(rows, tiny_catalog / "products.csv")] == [p.sha256 for p in catalog.products]

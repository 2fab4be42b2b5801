"""A catalog photo's vector blended with its product's in-room views, on hand-computable vectors and real image files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.config import Preprocessing
from engine.index.views import ProductView, ProductViews, fuse_views, view_crops


def test_a_photo_moves_toward_its_products_mean_view_and_keeps_its_norm():
    photos = np.array([[1, 0], [0, 2], [1, 1]], np.float32)
    products = ["a", "b", "a"]  # product a has two photos
    views = np.array([[0, 1], [0, 3], [5, 5]], np.float32)
    view_products = ["a", "a", "z"]  # z has no photo here: its view is never used
    out = fuse_views(photos, products, views, view_products, weight=0.5)
    # a's mean view is (0, 2): photo 0 -> (1, 0) + 0.5 (0, 2) = (1, 1), rescaled to norm 1
    assert out[0] == pytest.approx([2 ** -0.5, 2 ** -0.5], abs=1e-6)
    # photo 2 -> (1, 1) + (0, 1) = (1, 2), rescaled to norm sqrt(2)
    assert out[2] == pytest.approx(np.array([1, 2]) * np.sqrt(2) / np.sqrt(5), abs=1e-6)
    assert out[1] == pytest.approx(photos[1])  # b has no view: unchanged
    assert out.dtype == np.float32 and photos[0] == pytest.approx([1, 0])  # the input is not modified
    # the larger the weight, the nearer the mean view's direction
    far = fuse_views(photos, products, views, view_products, weight=100.0)
    assert far[0] == pytest.approx([0, 1], abs=0.01)


def test_fusing_refuses_what_cannot_be_one_embedders_vectors():
    photos = np.eye(2, dtype=np.float32)
    with pytest.raises(ValueError, match="D=3"):
        fuse_views(photos, ["a", "b"], np.ones((1, 3), np.float32), ["a"])
    with pytest.raises(ValueError, match="one product id a row"):
        fuse_views(photos, ["a"], np.ones((1, 2), np.float32), ["a"])
    with pytest.raises(ValueError, match="weight must be > 0"):
        fuse_views(photos, ["a", "b"], np.ones((1, 2), np.float32), ["a"], weight=0.0)
    with pytest.raises(ValueError, match="positive number"):
        ProductViews((ProductView("a", Path("v.jpg"), (0, 0, 1, 1)),), weight=-1.0)
    with pytest.raises(ValueError, match="nothing to blend"):
        ProductViews((), source="m.json")


def test_views_are_cut_as_a_room_crop_and_kept_per_product(tmp_path):
    image = np.full((100, 200, 3), 255, np.uint8)
    image[20:60, 100:180] = (0, 0, 255)  # red (OpenCV writes BGR) where the product was pasted
    cv2.imwrite(str(tmp_path / "v.png"), image)
    views = ProductViews((ProductView("a", tmp_path / "v.png", (100, 20, 180, 60), "room-1"),
                          ProductView("b", tmp_path / "v.png", (0, 0, 50, 50))), weight=0.5, source="m.json", digest="ab")
    (crop,) = list(view_crops(views.for_products(["a"]).views, 32, 0.0))
    assert crop.shape == (32, 32, 3)
    # the box is 80 x 40: squared on white, the middle rows are the product's colour, the top and bottom white
    assert tuple(crop[16, 16]) == (255, 0, 0) and tuple(crop[1, 16]) == (255, 255, 255)
    assert views.for_products(["a"]).record() == {"views": 1, "products": 1, "weight": 0.5, "source": "m.json", "sha256": "ab"}
    assert [v.product_id for v in views.outside({"room-1"}).views] == ["b"] and views.outside({"room-1", ""}) is None


class _MeanColour:
    """A stand-in embedder: the mean colour of the image centre (so a view's colour moves its product's vector)."""

    preprocessing = Preprocessing(image_size=32, fill_confidence=0.0)
    fingerprint = "mean-colour:1"

    def __call__(self, images) -> np.ndarray:
        ims = np.stack(list(images))
        return ims[:, 12:20, 12:20].reshape(len(ims), -1, 3).mean(1).astype(np.float32) / 255.0


def _square(path: Path, rgb: tuple[int, int, int]) -> Path:
    im = np.full((40, 40, 3), 255, np.uint8)
    im[5:35, 5:35] = rgb
    cv2.imwrite(str(path), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    return path


def test_the_products_index_holds_each_photo_blended_with_its_products_views(tmp_path):
    from engine.data.catalog import load_catalog
    from engine.index.serving_folder import product_index

    (tmp_path / "images").mkdir()
    _square(tmp_path / "images" / "red.png", (200, 0, 0))
    _square(tmp_path / "images" / "green.png", (0, 200, 0))
    (tmp_path / "products.csv").write_text("product_id,name,type,image\nR,red,Chair,images/red.png\nG,green,Chair,images/green.png\n")
    catalog = load_catalog(tmp_path)
    view = _square(tmp_path / "view.png", (0, 0, 200))  # R seen in a blue room
    views = ProductViews((ProductView("R", view, (5, 5, 35, 35), "room-1"), ProductView("X", view, (5, 5, 35, 35))), weight=1.0,
                         source="m.json", digest="ab")  # X is not in this catalog: its view is never embedded
    embedder = _MeanColour()
    plain = product_index(catalog, embedder)
    blended = product_index(catalog, embedder, views=views)
    red, green, blue = np.array([200, 0, 0]) / 255, np.array([0, 200, 0]) / 255, np.array([0, 0, 200]) / 255
    assert plain.vectors[0] == pytest.approx(red, abs=1e-6) and plain.vectors[1] == pytest.approx(green, abs=1e-6)
    expected = (red + blue) / np.linalg.norm(red + blue) * np.linalg.norm(red)  # weight 1, the photo's norm kept
    assert blended.vectors[0] == pytest.approx(expected, abs=1e-6)
    assert blended.vectors[1] == pytest.approx(green, abs=1e-6)  # G has no view
    # a blue room crop now finds R first; without the views it was a tie at best
    q = blue[None].astype(np.float32)
    assert [m.item.product_id for m in blended.search(q, 2)[0]] == ["R", "G"]

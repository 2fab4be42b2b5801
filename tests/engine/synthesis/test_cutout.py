"""White-background cut-out masks on made-up images with known shapes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.synthesis.cutout import CutoutConfig, CutoutError, cutout_mask, feather, mask_box


def on_white(shape: np.ndarray, colour=(40, 90, 160), white=252) -> np.ndarray:
    img = np.full(shape.shape + (3,), white, np.uint8)
    img[shape] = colour
    return img


def disc(h=200, w=240, centre=(120, 100), r=60) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, centre, r, 1, thickness=-1)
    return m.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_disc_and_rectangle_match_their_shape():
    shape = disc()
    alpha = cutout_mask(on_white(shape))
    assert alpha.dtype == np.float32 and alpha.shape == shape.shape
    assert 0 <= alpha.min() and alpha.max() == 1
    assert iou(alpha >= 0.5, shape) > 0.95
    assert not (alpha[~shape] > 0).any()  # feathering stays inside: no white halo
    assert ((alpha > 0) & (alpha < 1)).any()  # a soft edge
    rect = np.zeros((150, 200), bool)
    rect[30:120, 50:170] = True
    alpha = cutout_mask(on_white(rect, colour=(200, 40, 40)))
    assert iou(alpha >= 0.5, rect) > 0.95
    assert mask_box(alpha, 0.01) == (50, 30, 170, 120)


def test_white_object_with_dark_outline_keeps_its_white_inside():
    img = np.full((200, 200, 3), 250, np.uint8)
    cv2.rectangle(img, (50, 40), (150, 160), (20, 20, 20), thickness=3)  # white box drawn in black
    cv2.circle(img, (100, 100), 20, (255, 255, 255), thickness=-1)  # pure white detail inside
    alpha = cutout_mask(img)
    assert alpha[60:140, 70:130].min() == 1.0  # interior, white detail included
    assert alpha[:35].max() == 0 and alpha[:, :45].max() == 0
    drawn = mask_box((img.min(axis=2) < 128).astype(np.float32))  # the outline's extent
    filled = np.zeros(img.shape[:2], bool)
    filled[drawn[1] : drawn[3], drawn[0] : drawn[2]] = True
    assert mask_box(alpha, 0.01) == drawn and iou(alpha >= 0.5, filled) > 0.95


def test_l_shape_keeps_its_concave_corner_as_background():
    shape = np.zeros((200, 200), bool)
    shape[30:170, 30:80] = True
    shape[120:170, 30:170] = True
    alpha = cutout_mask(on_white(shape, colour=(90, 140, 60)))
    assert iou(alpha >= 0.5, shape) > 0.95
    assert alpha[40:110, 90:160].max() == 0  # the notch is backdrop, not a filled hole


def test_noisy_off_white_background_and_specks():
    rng = np.random.default_rng(0)
    shape = disc(r=60)
    img = on_white(shape, colour=(120, 60, 30), white=240).astype(np.int16)
    img += rng.integers(-10, 11, img.shape)  # sensor / JPEG noise on the backdrop
    img[10:12, 10:12] = 100  # dust specks
    img[180:181, 220:222] = 100
    alpha = cutout_mask(np.clip(img, 0, 255).astype(np.uint8))
    assert iou(alpha >= 0.5, shape) > 0.95
    assert alpha[:20, :20].max() == 0 and alpha[175:, 210:].max() == 0


def test_enclosed_dark_hole_is_filled_and_thin_gap_closed():
    img = np.full((200, 200, 3), 250, np.uint8)
    cv2.circle(img, (100, 100), 60, (30, 120, 30), thickness=12)  # a green ring ...
    cv2.circle(img, (100, 100), 15, (248, 248, 248), thickness=-1)  # ... around white that is enclosed
    img[98:100, 30:50] = 250  # a 2-pixel crack through the ring that lets the backdrop in
    alpha = cutout_mask(img)
    assert alpha[100, 100] == 1.0 and alpha[60, 100] == 1.0  # the ring's inside stays foreground
    without_closing = cutout_mask(img, close_px=0)
    assert without_closing[100, 100] == 0.0  # the crack connects the inside to the border


def test_light_grey_product_on_pure_white_uses_the_backdrop_level():
    shape = disc()
    img = on_white(shape, colour=(232, 232, 232), white=255)  # a white chair's shaded back at 232
    assert iou(cutout_mask(img) >= 0.5, shape) > 0.95  # backdrop at 255: level 250
    with pytest.raises(CutoutError, match="all white"):
        cutout_mask(img, backdrop_margin=None)  # fixed level 225: the product is "white"
    assert CutoutConfig().level(np.full((10, 10), 255)) == 250
    assert CutoutConfig().level(np.full((10, 10), 200)) == 225  # no white border: the fixed floor


def test_see_through_backdrop_inside_a_frame_is_optional_background():
    img = np.full((200, 200, 3), 255, np.uint8)  # a pure white studio backdrop
    cv2.rectangle(img, (40, 40), (160, 160), (110, 70, 40), thickness=10)  # a wooden frame ...
    img[70:130, 70:100] = 244  # ... with a shaded white panel on one side, open on the other
    default = cutout_mask(img)
    assert default[100, 85] == 1.0 and default[100, 130] == 1.0  # spec default: everything enclosed is kept
    punched = cutout_mask(img, see_through_level=254)
    assert punched[100, 130] == 0.0  # the backdrop seen through the frame
    assert punched[100, 85] == 1.0 and punched[40, 100] == 1.0  # the shaded panel and the frame stay
    with pytest.raises(ValueError, match="see_through_level"):
        CutoutConfig(see_through_level=100)


def test_backdrop_between_close_rods_stays_background():
    img = np.full((100, 100, 3), 255, np.uint8)
    for x in (30, 34, 38, 42):  # four dark rods 2 px wide with 2 px gaps
        img[20:80, x : x + 2] = 40
    hard = CutoutConfig().hard_mask(img)
    assert hard[50, 30:44].tolist() == [True, True, False, False] * 3 + [True, True]


def test_feather_width_and_hard_mask():
    shape = disc(r=40)
    hard = cutout_mask(on_white(shape), feather_px=0)
    assert set(np.unique(hard)) == {0.0, 1.0} and iou(hard > 0, shape) > 0.99
    soft = feather(shape, 3.0)
    assert soft[shape].min() == pytest.approx(0.5 / 3) and soft[~shape].max() == 0
    edge_touching = np.zeros((20, 20), bool)
    edge_touching[:, :10] = True
    assert feather(edge_touching, 2.0)[:, 0].min() == 1.0  # the frame edge is not an object edge


def test_all_white_and_full_frame_images_are_errors():
    with pytest.raises(CutoutError, match="all white"):
        cutout_mask(np.full((50, 60, 3), 250, np.uint8))
    room = np.empty((120, 160, 3), np.uint8)
    room[:70] = (200, 190, 170)
    room[70:] = (110, 80, 50)
    with pytest.raises(CutoutError, match="not a product on a white background"):
        cutout_mask(room)
    with pytest.raises(CutoutError, match="uint8"):
        cutout_mask(np.zeros((10, 10), np.uint8))
    dust = np.full((80, 80, 3), 250, np.uint8)
    dust[2::4, 2::4] = 0  # 400 one-pixel specks, none a part of anything
    with pytest.raises(CutoutError, match="specks"):
        cutout_mask(dust)


def test_pastel_backdrop_is_not_white():
    shape = disc()
    img = on_white(shape)
    img[~shape] = (255, 225, 190)  # saturated peach: a wall, not a backdrop
    with pytest.raises(CutoutError, match="not a product"):
        cutout_mask(img)
    assert iou(cutout_mask(img, max_spread=80, white_level=180) >= 0.5, shape) > 0.95


def test_mask_box_on_known_masks():
    m = np.zeros((10, 12), np.float32)
    assert mask_box(m) is None
    m[2:5, 3:9] = 1.0
    assert mask_box(m) == (3, 2, 9, 5)
    m[7, 11] = 0.3
    assert mask_box(m) == (3, 2, 9, 5)
    assert mask_box(m, threshold=0.2) == (3, 2, 12, 8)
    full = np.ones((4, 5), np.float32)
    assert mask_box(full) == (0, 0, 5, 4)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        mask_box(np.ones((2, 2, 3)))


@pytest.mark.parametrize("kwargs", [{"white_level": 300}, {"close_px": -1}, {"min_part_share": 1.0},
                                    {"feather_px": -0.5}, {"max_foreground_share": 0}, {"backdrop_margin": -1}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        CutoutConfig(**kwargs)


def test_config_and_function_agree():
    img = on_white(disc())
    np.testing.assert_array_equal(CutoutConfig(feather_px=1.0).mask(img), cutout_mask(img, feather_px=1.0))
